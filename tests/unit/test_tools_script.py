"""hack/tools.sh's groups and locks, on a cache whose tools are already "built" (empty executables at
the versions the script pins), so nothing compiles: `later` names exactly the tools make test builds
beside its tests, and each tool has its own lock, so a test waiting for one is not held up by the
build of another."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "tools.sh"
LATER = {"registry", "cosign", "syft", "keda-operator", "keda-adapter"}


def _pins() -> dict[str, str]:
    """The versions tools.sh pins for the tools `later` names (KEDA's is the CRDs' pin)."""
    text = SCRIPT.read_text()
    pins = {m[1].lower(): m[2] for m in re.finditer(r"^([A-Z]+)_VERSION=(\S+)$", text, re.M)}
    keda = next(
        line.split()[2]
        for line in (ROOT / "hack" / "third-party-crds.txt").read_text().splitlines()
        if line.startswith("keda ")
    )
    return {
        **{tool: pins[tool] for tool in ("registry", "cosign", "syft")},
        "keda-operator": keda,
        "keda-adapter": keda,
    }


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A tool cache holding a stand-in binary for each `later` tool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, version in _pins().items():
        stand_in = bin_dir / f"{tool}-{version}"
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    return tmp_path


def _tools(cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SOUNDMIND_CACHE": str(cache)}
    return subprocess.Popen([str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(process: subprocess.Popen, timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def test_later_links_exactly_the_tools_make_test_builds_beside_its_tests(cache: Path):
    current = Path(_done(_tools(cache, "later")).splitlines()[-1])
    assert current == cache / "bin" / "current"
    assert {link.name for link in current.iterdir()} == LATER
    for link in current.iterdir():
        assert os.readlink(link) == f"../{link.name}-{_pins()[link.name]}"


def test_a_caller_waits_for_the_tool_being_built_and_only_for_it(cache: Path):
    with open(cache / "bin" / ".registry.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another caller building the registry
        waiting = _tools(cache, "registry")
        _done(_tools(cache, "cosign"), timeout=30)  # cosign's lock is free: no wait
        time.sleep(2)
        assert waiting.poll() is None, "hack/tools.sh registry went on while the registry's lock was held"
        assert not (cache / "bin" / "current" / "registry").exists()
    _done(waiting, timeout=30)
    assert os.readlink(cache / "bin" / "current" / "registry") == f"../registry-{_pins()['registry']}"


def test_an_unknown_tool_is_refused_naming_the_tools_and_groups(cache: Path):
    refused = _tools(cache, "minikube")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "no tool 'minikube'" in err and "keda-operator" in err and "the groups first, later" in err


def _failing_go(tmp_path: Path) -> dict[str, str]:
    """An environment whose go answers `go list` (the pins) and fails every build."""
    fake = tmp_path / "fake-go"
    fake.mkdir()
    real_go = subprocess.run(["bash", "-c", "command -v go"], capture_output=True, text=True, check=True).stdout.strip()
    (fake / "go").write_text(
        f'#!/bin/sh\n[ "$1" = list ] && exec {real_go} "$@"\necho "go $1: a compile error" >&2\nexit 1\n'
    )
    (fake / "go").chmod(0o755)
    return {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}


def test_a_failed_build_fails_the_script_and_links_nothing(cache: Path, tmp_path: Path):
    """A compiler error ends tools.sh with an error: no "built" line, no current/ link to a binary
    that is not there (what a test waiting for the tool would then run)."""
    env = {**_failing_go(tmp_path), "SOUNDMIND_CACHE": str(cache)}
    failed = subprocess.run([str(SCRIPT), "actionlint"], env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0
    assert "a compile error" in failed.stderr and "built actionlint" not in failed.stderr
    assert not (cache / "bin" / "current" / "actionlint").exists()
    assert not list((cache / "bin").glob("actionlint-*"))


def _module_pin(wrapper: str, module: str) -> str:
    return subprocess.run(
        ["go", "list", "-m", "-f", "{{.Version}}", module],
        cwd=ROOT / "hack" / "tools" / wrapper,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_all_is_both_groups_and_kind_and_kubeadm_only_when_named(cache: Path, tmp_path: Path):
    """`hack/tools.sh` with no argument (`make tools`) builds `first` and `later`, not kind and kubeadm,
    which only `make test-kind` needs; naming one builds it. Every other tool is a stand-in
    here and go fails every build, so a build of anything but kubeadm would fail the first run."""
    k8s = _module_pin("k8s", "k8s.io/kubernetes")
    text = SCRIPT.read_text()
    pins = {m[1].lower(): m[2] for m in re.finditer(r"^([A-Z]+)_VERSION=(\S+)$", text, re.M)}
    versions = {
        **_pins(),
        **dict.fromkeys(
            ["kube-apiserver", "kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler", "kubectl"],
            k8s,
        ),
        "pause": k8s,
        "etcd": _module_pin("etcd", "go.etcd.io/etcd/server/v3"),
        **{tool: pins[tool] for tool in ("kwok", "helm", "actionlint")},
    }
    for tool, version in versions.items():
        stand_in = cache / "bin" / f"{tool}-{version}"
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    for line in (ROOT / "hack" / "third-party-crds.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            project, _, version, _ = line.split()
            (cache / "crds" / f"{project}-{version}").mkdir(parents=True)
    env = {**_failing_go(tmp_path), "SOUNDMIND_CACHE": str(cache)}

    everything = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert everything.returncode == 0, everything.stderr
    assert {link.name for link in (cache / "bin" / "current").iterdir()} == set(versions)

    kubeadm = subprocess.run([str(SCRIPT), "kubeadm"], env=env, capture_output=True, text=True, timeout=60)
    assert kubeadm.returncode != 0
    assert f"building kubeadm {k8s}" in kubeadm.stderr and "a compile error" in kubeadm.stderr
