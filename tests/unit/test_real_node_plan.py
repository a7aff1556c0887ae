"""The real node's pure parts (tests/support/realnode.py): its address plan and slot choice, the
configuration it gives containerd, the CNI plugins, the kubelet and kube-proxy, and how its
teardown reads the machine (mount table, shim command lines)."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path

import pytest

from hack.images.build import IMAGES
from tests.support import localcluster
from tests.support.errors import ClusterError
from tests.support.localcluster import LocalCluster
from tests.support.pki import CertPair, NodePKI
from tests.support.realnode import (
    BUSYBOX_IMAGE,
    PAUSE_IMAGE,
    SLOTS,
    NodeNetwork,
    RealNode,
    cgroup_mounts,
    free_slot,
    mounts_under,
    shim_of,
)

WORKDIR = Path("/tmp/soundmind-cluster-abc123")
NODE = RealNode(WORKDIR, NodeNetwork(207))


def net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


@pytest.mark.parametrize("slot", [SLOTS[0], SLOTS[-1]])
def test_a_slot_s_ranges_lie_apart_inside_its_claim(slot: int):
    network = NodeNetwork(slot)
    link = ipaddress.IPv4Interface(f"{network.host_ip}/30").network
    pods, services = net(network.pod_cidr), net(network.service_cidr)

    assert all(part.subnet_of(network.claim) for part in (link, pods, services))
    assert not (pods.overlaps(services) or pods.overlaps(link) or services.overlaps(link))
    assert ipaddress.ip_address(network.node_ip) in link
    assert all(len(name) <= 15 for name in (network.host_veth, network.node_veth, network.bridge)), "IFNAMSIZ"


@pytest.mark.parametrize(
    ("used", "slot"),
    [
        pytest.param([], SLOTS[0], id="nothing used"),
        pytest.param([net("192.0.2.0/24"), net("127.0.0.0/8"), net("10.96.0.0/12")], SLOTS[0], id="other networks"),
        pytest.param([net(f"10.{SLOTS[0]}.255.0/30")], SLOTS[0] + 1, id="another cluster's link"),
        pytest.param([net(f"10.{SLOTS[0]}.0.0/16"), net(f"10.{SLOTS[0] + 1}.7.0/24")], SLOTS[0] + 2, id="overlaps"),
    ],
)
def test_the_first_slot_whose_range_nothing_overlaps_is_chosen(used, slot):
    assert free_slot(used) == slot


def test_no_free_slot_is_an_error_saying_what_to_do():
    with pytest.raises(ClusterError, match="stop other local clusters"):
        free_slot([net("10.0.0.0/8")])


def test_containerd_keeps_everything_under_the_cluster_directory():
    config = tomllib.loads(NODE.containerd_config())

    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["sandbox_image"] == f"docker.io/library/{PAUSE_IMAGE}"
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": str(WORKDIR / "node" / "cni")}
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    paths = [
        config["root"],
        config["state"],
        config["temp"],
        config["grpc"]["address"],
        config["plugins"]["io.containerd.internal.v1.opt"]["path"],
        runc["options"]["Root"],
        cri["registry"]["config_path"],
    ]
    assert all(Path(path).is_relative_to(WORKDIR) for path in paths), paths
    assert config["grpc"]["address"] == str(NODE.containerd_socket)


def test_a_trusted_registry_gets_its_ca_in_containerd_s_host_configuration(tmp_path):
    node = RealNode(tmp_path / "cluster", NodeNetwork(207))
    (tmp_path / "ca.crt").write_text("the CA")
    node.trust_registry("10.207.255.1:5443", tmp_path / "ca.crt")

    host_dir = tmp_path / "cluster" / "node" / "certs.d" / "10.207.255.1:5443"
    assert sorted(p.name for p in host_dir.iterdir()) == ["ca.crt"]  # no hosts.toml: see trust_registry
    assert (host_dir / "ca.crt").read_text() == "the CA"
    cri = tomllib.loads(node.containerd_config())["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["registry"]["config_path"] == str(host_dir.parent)


def test_pods_get_a_bridge_of_the_slot_s_pod_range_without_masquerading():
    (bridge,) = NODE.cni_config()["plugins"]

    assert bridge["type"] == "bridge" and bridge["bridge"] == "sm207-pods"
    assert (bridge["isGateway"], bridge["isDefaultGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == (
        True,
        True,
        False,
        True,
    )
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.207.0.0/17"}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(WORKDIR)


def pki() -> NodePKI:
    def pair(name: str) -> CertPair:
        return CertPair(WORKDIR / "pki" / f"{name}.crt", WORKDIR / "pki" / f"{name}.key")

    return NodePKI(pair("kubelet"), pair("kubelet-serving"), pair("kube-proxy"), pair("apiserver-kubelet-client"))


def test_kubelet_runs_on_this_machine_s_cgroups_v1_in_a_cgroup_root_of_its_own():
    config = NODE.kubelet_config(WORKDIR / "pki" / "ca.crt", pki())

    assert (config["failCgroupV1"], config["cgroupDriver"]) == (False, "cgroupfs")
    assert config["cgroupRoot"] == "/soundmind-cluster-abc123"
    assert (
        RealNode(Path("/tmp/soundmind-cluster-other"), NodeNetwork(207)).kubelet_config(
            WORKDIR / "pki" / "ca.crt", pki()
        )["cgroupRoot"]
        != config["cgroupRoot"]
    )
    assert config["containerRuntimeEndpoint"] == f"unix://{NODE.containerd_socket}"
    assert config["address"] == "10.207.255.2"
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["imageGCHighThresholdPercent"] == 100, "imported images cannot be pulled again"
    assert config["imagePullCredentialsVerificationPolicy"] == "NeverVerifyAllowlistedImages"
    for key in ("podLogsDir", "volumePluginDir", "tlsCertFile", "tlsPrivateKeyFile"):
        assert Path(config[key]).is_relative_to(WORKDIR), key


def test_kubelet_runs_every_imported_image_without_pull_credentials():
    """The images tests import stay preloaded for the kubelet after a registry pull with a pull secret
    of the same image ID (test_registry pulls `make push`'s operator image, which is the imported
    soundmind-operator:dev); the allowlist names them as pods do, without registry, tag or digest."""
    allowlist = NODE.kubelet_config(WORKDIR / "pki" / "ca.crt", pki())["preloadedImagesVerificationAllowlist"]
    imported = [PAUSE_IMAGE, BUSYBOX_IMAGE, *(image.tag for image in IMAGES.values())]
    imported += ["soundmind-trainer-standin:dev", "soundmind-import-test:dev"]  # test_upgrade's, test_real_node's
    for image in imported:
        assert image.split(":")[0] in allowlist, image
    for name in allowlist:
        assert ":" not in name and "@" not in name and "/" not in name, name


def test_kube_proxy_programs_nftables_for_the_slot_s_pods_and_answers_health_on_the_node_address():
    config = NODE.kube_proxy_config()

    assert config["mode"] == "nftables"
    assert config["clusterCIDR"] == "10.207.0.0/17"
    assert config["healthzBindAddress"] == "10.207.255.2:10256"
    assert NODE.healthz_url == "http://10.207.255.2:10256/healthz"
    assert config["conntrack"]["maxPerCore"] == 0, "the conntrack table is the whole machine's"


MOUNTINFO = "\n".join(
    [
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu",
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
        f"50 27 0:4 net:[4026532] {WORKDIR}/node/netns rw - nsfs nsfs rw",
        f"51 27 254:0 {WORKDIR}/node/kubelet {WORKDIR}/node/kubelet rw shared:2 - ext4 /dev/vda rw",
        f"52 51 0:60 / {WORKDIR}/node/kubelet/pods/u/volumes/kube-api-access rw - tmpfs tmpfs rw",
        f"53 27 0:61 / {WORKDIR}/node/containerd/state/a\\040b/rootfs rw - overlay overlay rw",
        f"54 27 0:62 / {WORKDIR}-other/node/netns rw - nsfs nsfs rw",
        f"55 50 0:4 net:[4026533] {WORKDIR}/node/netns rw - nsfs nsfs rw",
    ]
)


def test_mounts_under_the_cluster_directory_come_deepest_and_latest_first_each_time_mounted():
    assert mounts_under(MOUNTINFO, WORKDIR) == [
        WORKDIR / "node/kubelet/pods/u/volumes/kube-api-access",
        WORKDIR / "node/containerd/state/a b/rootfs",
        WORKDIR / "node/netns",
        WORKDIR / "node/kubelet",
        WORKDIR / "node/netns",
    ]


def test_cgroup_hierarchies_are_read_from_the_mount_table():
    assert cgroup_mounts(MOUNTINFO) == [Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/unified")]


def test_a_shim_of_our_containerd_is_known_by_its_address_and_names_its_socket():
    socket = Path("/tmp/node-exp/containerd/containerd.sock")
    sandbox = "0e4803cf836f9f37ecbfd1455fe1fe68c7415347e09c4ba61a0cb122cbac9cee"
    argv = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", sandbox, "-address", str(socket)]

    # As containerd 1.6.20 named it on this machine: /run/containerd/s/<this>.
    assert shim_of(argv, socket) == "1d5f26df1f84e74bf5903e44e4df0942d846032a2ffa4f62744a9de2b6ab0de4"
    assert shim_of(argv, Path("/tmp/another/containerd.sock")) is None
    assert shim_of(["/usr/bin/containerd", f"--config={socket}"], socket) is None


def test_without_root_a_cluster_with_a_real_node_refuses_to_start_saying_how_to_leave_it_out(monkeypatch, tmp_path):
    for name in localcluster.BINARIES:  # the control plane's binaries are there; the node's are not
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    with pytest.raises(ClusterError) as refused:
        LocalCluster.start(tmp_path)

    message = str(refused.value)
    assert message.startswith("the real node needs root (")
    assert f"kubelet, kube-proxy, pause in {tmp_path} (build them: hack/tools.sh)" in message
    assert "real_node=False" in message and "--no-real-node" in message and "SOUNDMIND_REAL_NODE=false" in message


@pytest.mark.parametrize(
    "argv", [["load-images"], ["up", "image.tar"]], ids=["no archives", "archives without load-images"]
)
def test_image_archives_go_with_load_images_only(argv, capsys):
    with pytest.raises(SystemExit) as usage:
        localcluster.main(argv)

    assert usage.value.code == 2
    assert "image archives go with load-images" in capsys.readouterr().err
