"""hack/kind_node.py's pieces that need no Docker: the cluster config kind gets with either node
image and its agreement with the pinned kind's own image, the containerd config, the check for a
bounding set without CAP_SYS_RESOURCE, the libraries a program in the kube-proxy image needs; and the
runc wrapper (hack/kind/runc-drop-sys-resource) with a stand-in runc."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hack import kind_node
from tests.support import localcluster

ROOT = Path(__file__).resolve().parents[2]
FULL = "000001ffffffffff"  # every capability through CAP_CHECKPOINT_RESTORE
NO_SYS_RESOURCE = "000001fffeffffff"  # this sandbox's: bit 24 cleared


def _cluster_config(offline: bool) -> dict:
    """The config as hack/test-kind.sh writes it (`hack/kind_node.py --config local|upstream`)."""
    printed = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "kind_node.py"), "--config", "local" if offline else "upstream"],
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(printed.stdout)


@pytest.mark.parametrize("offline", [True, False], ids=["local", "upstream"])
def test_both_node_images_get_the_gang_scheduling_the_local_cluster_has(offline: bool):
    """The suite's gang tests need the PodGroup API and the scheduler's plugin, off by default in
    v1.37: kind's config turns them on as the local cluster's flags do, with either node image."""
    config = _cluster_config(offline)
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]
    gates = ",".join(f"{gate}={str(on).lower()}" for gate, on in config["featureGates"].items())
    assert gates == localcluster.GANG_SCHEDULING_FEATURE_GATES
    apis = ",".join(f"{api}={on}" for api, on in config["runtimeConfig"].items())
    assert apis == localcluster.GANG_SCHEDULING_RUNTIME_CONFIG


def test_the_offline_image_config_disables_what_the_image_lacks_and_allows_cgroup_v1():
    config = _cluster_config(offline=True)
    assert config["networking"]["disableDefaultCNI"] is True
    assert config["networking"]["kubeProxyMode"] == "nftables"
    patches = [yaml.safe_load(patch) for patch in config["kubeadmConfigPatches"]]
    init = next(p for p in patches if p["kind"] == "InitConfiguration")
    # a merge patch replaces kind's list: preflight (kind's own) must stay skipped
    assert set(init["skipPhases"]) == {"preflight", "addon/coredns"}
    kubelet = next(p for p in patches if p["kind"] == "KubeletConfiguration")
    assert kubelet["failCgroupV1"] is False


def test_kind_s_own_node_image_leaves_everything_else_as_kind_makes_it():
    assert set(_cluster_config(offline=False)) == {"kind", "apiVersion", "nodes", "featureGates", "runtimeConfig"}


def _pinned_kind() -> str:
    return re.search(r"^KIND_VERSION=(\S+)$", (ROOT / "hack" / "tools.sh").read_text(), re.M).group(1)


def test_the_pinned_kind_s_own_node_image_runs_the_local_cluster_s_kubernetes_minor_by_digest():
    """Where a registry answers (the CI workflow), the suite runs on kind's default node image: it must
    be the minor the local cluster and the offline image run (the gang tests need v1.37's API), and
    pinned by digest. Read from the pinned kind's own source."""
    source = kind_node.kind_module_dir(_pinned_kind()) / "pkg" / "apis" / "config" / "defaults" / "image.go"
    image = re.search(r'^const Image = "([^"]+)"$', source.read_text(), re.M).group(1)
    found = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image)
    assert found, image
    k8s = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Version}}", "k8s.io/kubernetes"],
        cwd=ROOT / "hack" / "tools" / "k8s",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert f"v{found.group(1)}.{found.group(2)}." == k8s[: len(f"v{found.group(1)}.{found.group(2)}.")], (image, k8s)


def test_a_kind_binary_s_version_is_read_and_a_stranger_is_refused(tmp_path: Path):
    kind = tmp_path / "kind"
    kind.write_text('#!/bin/sh\necho "kind v0.33.0 go1.26.3 linux/amd64"\n')
    kind.chmod(0o755)
    assert kind_node.kind_version(kind) == "v0.33.0"
    kind.write_text('#!/bin/sh\necho "not kind"\n')
    with pytest.raises(kind_node.NodeImageError, match="did not name a version: not kind"):
        kind_node.kind_version(kind)


def test_a_bounding_set_without_sys_resource_is_told_apart():
    assert kind_node.lacks_sys_resource(f"Name:\tx\nCapBnd:\t{NO_SYS_RESOURCE}\n")
    assert not kind_node.lacks_sys_resource(f"Name:\tx\nCapBnd:\t{FULL}\n")


KIND_CONFIG = """\
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
"""


def test_containerd_config_gets_kubeadms_pause_and_the_wrapper_only_where_needed():
    plain = kind_node.containerd_config(KIND_CONFIG, "registry.k8s.io/pause:3.10.1", wrap_runc=False)
    assert 'sandbox_image = "registry.k8s.io/pause:3.10.1"' in plain and "BinaryName" not in plain
    wrapped = kind_node.containerd_config(KIND_CONFIG, "registry.k8s.io/pause:3.10.1", wrap_runc=True)
    assert f'    BinaryName = "{kind_node.RUNC_WRAPPER_IN_NODE}"' in wrapped.splitlines()


def test_containerd_config_without_a_sandbox_image_line_is_refused():
    with pytest.raises(kind_node.NodeImageError):
        kind_node.containerd_config("version = 2\n", "registry.k8s.io/pause:3.10.1", wrap_runc=False)


def test_kind_config_of_the_pinned_kind_version_has_what_containerd_config_edits():
    """The real file, from the pinned kind's module (the Go module proxy's copy)."""
    module = kind_node.kind_module_dir(_pinned_kind())
    config = module / "images" / "base" / "files" / "etc" / "containerd" / "config.toml"
    edited = kind_node.containerd_config(config.read_text(), "registry.k8s.io/pause:3.10.1", wrap_runc=True)
    assert edited.count("BinaryName") == 2  # runc and kind's test-handler


def _wrapper(tmp_path: Path, bounding: str, *args: str) -> list[str]:
    """Runs the wrapper with a stand-in runc that records its arguments."""
    runc = tmp_path / "runc"
    runc.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\n')
    runc.chmod(0o755)
    env = {**os.environ, "SOUNDMIND_RUNC": str(runc), "SOUNDMIND_CAP_BOUNDING": bounding}
    subprocess.run([str(kind_node.RUNC_WRAPPER), *args], env=env, check=True, timeout=30)
    return (tmp_path / "args").read_text().splitlines()


CAPS = ["CAP_CHOWN", "CAP_SYS_RESOURCE", "CAP_SYS_ADMIN"]


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(parents=True)
    spec = {"process": {"capabilities": {kind: list(CAPS) for kind in ("bounding", "effective", "permitted")}}}
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


@pytest.mark.parametrize("bounding, kept", [(NO_SYS_RESOURCE, ["CAP_CHOWN", "CAP_SYS_ADMIN"]), (FULL, CAPS)])
def test_runc_wrapper_drops_sys_resource_from_a_bundle_only_where_it_cannot_be_had(tmp_path, bounding, kept):
    bundle = _bundle(tmp_path)
    args = ["--root", "/run/x", "--systemd-cgroup", "create", "--bundle", str(bundle), "--pid-file", "p", "id1"]
    assert _wrapper(tmp_path, bounding, *args) == args
    spec = json.loads((bundle / "config.json").read_text())
    assert all(caps == kept for caps in spec["process"]["capabilities"].values())


def test_runc_wrapper_drops_sys_resource_from_an_exec_process(tmp_path):
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["sh"], "capabilities": {"bounding": list(CAPS), "effective": list(CAPS)}}))
    _wrapper(tmp_path, NO_SYS_RESOURCE, "--root", "/run/x", "exec", "--process", str(process), "--detach", "id1")
    caps = json.loads(process.read_text())["capabilities"]
    assert caps == {"bounding": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "effective": ["CAP_CHOWN", "CAP_SYS_ADMIN"]}


def test_runc_wrapper_passes_other_commands_through(tmp_path):
    args = ["--root", "/run/x", "state", "id1"]
    assert _wrapper(tmp_path, NO_SYS_RESOURCE, *args) == args


def test_runc_wrapper_raises_an_oom_score_adj_below_its_callers_only_where_needed(tmp_path):
    """Lowering oom_score_adj needs CAP_SYS_RESOURCE too: the kubelet's -998 for pod sandboxes."""
    own = int(Path("/proc/self/oom_score_adj").read_text())
    for bounding, expected in ((NO_SYS_RESOURCE, own), (FULL, -998)):
        bundle = _bundle(tmp_path / bounding)
        spec = json.loads((bundle / "config.json").read_text())
        spec["process"]["oomScoreAdj"] = -998
        (bundle / "config.json").write_text(json.dumps(spec))
        _wrapper(tmp_path / bounding, bounding, "create", "--bundle", str(bundle), "id1")
        assert json.loads((bundle / "config.json").read_text())["process"]["oomScoreAdj"] == expected
