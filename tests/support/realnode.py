"""The local cluster's real node: containerd, runc and a kubelet that run pods for real beside kwok's
simulated GPU nodes, and kube-proxy (nftables mode) so that ClusterIP Services work.

Everything stays on this machine:

* the node lives in a network namespace of its own (bind-mounted on a file in the cluster
  directory), joined to the host by a veth pair: the host side holds 10.R.255.1/30, the node side
  10.R.255.2/30. R is a slot (:data:`SLOTS`) whose 10.R.0.0/16 no address or route of the host
  overlaps yet, chosen under a lock, so clusters started at once get different ones;
* pods get addresses of 10.R.0.0/17 from a bridge in the node's namespace (the bridge CNI plugin,
  host-local IPAM, no masquerading); Services get ClusterIPs of 10.R.128.0/18, which kube-proxy
  there turns into pod addresses;
* the host routes both ranges to the node side of the veth, so tests reach pod IPs and ClusterIPs;
  the node's default route points back at the host, where the API server listens on and advertises
  10.R.255.1, so pods reach it through the ``kubernetes`` Service. The host forwards nothing:
  nothing leaves the machine.

containerd, the kubelet and kube-proxy are components of the
:class:`~tests.support.localcluster.LocalCluster`, started inside the node's namespace with
``nsenter --net`` (``ip netns exec`` remounts /sys, and containerd then misreads the cgroups).
What outlives them (containerd's shims, the containers' processes and cgroups, mounts, the veth and
with it the routes) :meth:`RealNode.tear_down` removes, also for a cluster whose owner was killed:
the next cluster start does it.

Kubernetes 1.38 drops kubelet support for containerd 1.6 (Debian 12's); this node is v1.37.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.errors import ClusterError
from tests.support.oci_archive import LayerFile, normalized_reference, write_image_archive
from tests.support.pki import NodePKI

# The real node carries this label ("true"); kwok manages only nodes labelled sim.MANAGED_NODE_LABEL.
REAL_NODE_LABEL = "soundmind.ai/real-node"
NODE_NAME = "real-node"
# Images every real node has, imported at start (other images it pulls from a registry that
# :meth:`RealNode.trust_registry` configured).
PAUSE_IMAGE = "soundmind-pause:dev"  # the sandbox image, built from the kubernetes module's pause.c
BUSYBOX_IMAGE = "soundmind-busybox:dev"  # sh, httpd, wget, nc..., from Debian's busybox-static
# The repositories of the images that tests import into the real node's containerd (`ctr import`):
# the kubelet runs them without pull credentials even where it has pulled an image of the same ID
# with a pull secret (KubeletEnsureSecretPulledImages: under its default policy, a registry pull of
# `make push`'s operator image, whose ID is the imported soundmind-operator:dev's, turns the imported
# one into "pulled with credentials", and a pod of it without them into ErrImageNeverPull). Names as
# pods spell them (no registry: the kubelet matches them as written); an image imported under
# another name must be added here, or a pod of it fails with ErrImageNeverPull.
PRELOADED_REPOSITORIES = (
    "soundmind-pause",
    "soundmind-busybox",
    "soundmind-operator",
    "soundmind-standin",
    "soundmind-trainer",
    "soundmind-server",
    "soundmind-trainer-standin",  # test_upgrade's
    "soundmind-import-test",  # test_real_node's
)
# From hack/tools.sh, beside the control plane's binaries.
BINARIES = ("kubelet", "kube-proxy", "pause")
# Debian programs the node runs, and their packages (hack/apt.sh installs them). kube-proxy's
# nftables mode runs `nft`.
PROGRAMS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "ip": "iproute2",
    "nft": "nftables",
}
CNI_BIN_DIR = Path("/usr/lib/cni")  # containernetworking-plugins
CNI_PLUGINS = ("bridge", "host-local", "loopback")  # containerd runs `loopback` for each pod's lo
BUSYBOX = Path("/bin/busybox")  # busybox-static
# Second octets of 10.R.0.0/16: clear of kind's pod (10.244) and service (10.96/12) ranges and of
# the addresses kwok gives simulated nodes (10.240) and pods (10.250).
SLOTS = range(200, 240)
KUBE_PROXY_HEALTHZ_PORT = 10256
# What the kubelet writes outside its --root-dir, and containerd 1.6 outside its root and state.
_CONTAINER_LOG_LINKS = Path("/var/log/containers")
_SHIM_SOCKETS = Path("/run/containerd/s")
_CNI_RESULTS = Path("/var/lib/cni/results")  # go-cni's cache, by network name
_SLOT_LOCK = Path(tempfile.gettempdir()) / "soundmind-real-node.lock"

_LIBC = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses of the real node in slot ``slot``."""

    slot: int

    @property
    def claim(self) -> ipaddress.IPv4Network:
        """All of this slot's addresses: another cluster may use none of them."""
        return ipaddress.IPv4Network(f"10.{self.slot}.0.0/16")

    @property
    def host_ip(self) -> str:
        return f"10.{self.slot}.255.1"

    @property
    def node_ip(self) -> str:
        return f"10.{self.slot}.255.2"

    @property
    def pod_cidr(self) -> str:
        return f"10.{self.slot}.0.0/17"

    @property
    def service_cidr(self) -> str:
        return f"10.{self.slot}.128.0/18"

    # Interface names (at most 15 characters): the slot tells whose they are.
    @property
    def host_veth(self) -> str:
        return f"sm{self.slot}-host"

    @property
    def node_veth(self) -> str:
        return f"sm{self.slot}-node"

    @property
    def bridge(self) -> str:
        return f"sm{self.slot}-pods"


def free_slot(used: Iterable[ipaddress.IPv4Network]) -> int:
    """The first slot whose 10.R.0.0/16 overlaps none of the ``used`` networks."""
    used = list(used)
    for slot in SLOTS:
        claim = NodeNetwork(slot).claim
        if not any(claim.overlaps(network) for network in used):
            return slot
    raise ClusterError(
        f"real node: every network slot 10.{SLOTS[0]}-{SLOTS[-1]}.0.0/16 overlaps an address or route of this "
        "machine (`ip route show table all`): stop other local clusters first"
    )


def used_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks of this machine's addresses and routes (every table)."""
    used = []
    for interface in json.loads(_run(["ip", "-json", "-4", "address", "show"], "listing addresses")):
        for address in interface.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{address['local']}/{address['prefixlen']}", strict=False))
    for route in json.loads(_run(["ip", "-json", "-4", "route", "show", "table", "all"], "listing routes")):
        if route.get("dst", "default") != "default":
            used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    return used


def missing_prerequisites(bin_dir: Path) -> list[str]:
    """What this machine lacks to run the real node, each with how to get it; empty when nothing."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (it creates a network namespace, veth, routes, cgroups and mounts)")
    binaries = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if binaries:
        missing.append(f"{', '.join(binaries)} in {bin_dir} (build them: hack/tools.sh)")
    packages = sorted({package for program, package in PROGRAMS.items() if not shutil.which(program)})
    plugins = [plugin for plugin in CNI_PLUGINS if not os.access(CNI_BIN_DIR / plugin, os.X_OK)]
    if plugins:
        packages.append("containernetworking-plugins")
    if not os.access(BUSYBOX, os.X_OK):
        packages.append("busybox-static")
    if packages:
        missing.append(f"the Debian packages {', '.join(packages)} (install them: hack/apt.sh)")
    if not Path("/proc/sys/net/bridge").is_dir():
        missing.append("the br_netfilter kernel module (`modprobe br_netfilter`)")
    return missing


class RealNode:
    """The real node of the cluster in ``workdir``: its paths, configuration and network. The
    cluster starts its programs (:meth:`containerd_argv`, :meth:`kubelet_argv`,
    :meth:`kube_proxy_argv`) and, once they are stopped, calls :meth:`tear_down`."""

    def __init__(self, workdir: Path, network: NodeNetwork):
        self.workdir = workdir
        self.network = network
        self.dir = workdir / "node"

    # -- paths (all under the cluster directory) ---------------------------------------------
    @property
    def netns(self) -> Path:
        return self.dir / "netns"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.workdir / "kubelet.kubeconfig"

    @property
    def kube_proxy_kubeconfig(self) -> Path:
        return self.workdir / "kube-proxy.kubeconfig"

    @property
    def cgroup_root(self) -> str:
        """The kubelet's cgroupRoot, in every hierarchy: its own, so two kubelets never share one."""
        return f"/{self.workdir.name}"

    @property
    def healthz_url(self) -> str:
        """kube-proxy's health: 200 once it has programmed the Services (and the host reaches the node)."""
        return f"http://{self.network.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}/healthz"

    # -- network ------------------------------------------------------------------------------
    @classmethod
    def create(cls, workdir: Path, record: Callable[[RealNode], None]) -> RealNode:
        """Claim a free slot and build the node's network. ``record`` writes the slot into the
        cluster's state file before anything of it exists, so that whatever happens next, the next
        cluster start knows what to remove."""
        with _exclusive(_SLOT_LOCK):
            node = cls(workdir, NodeNetwork(free_slot(used_networks())))
            record(node)
            node.netns.parent.mkdir(parents=True, exist_ok=True)
            node.netns.touch()
            _run(["unshare", f"--net={node.netns}", "true"], "creating the node's network namespace")
            net = node.network
            # Once the host side has its address, the slot shows as used: the lock can go.
            _ip_batch(
                [
                    f"link add {net.host_veth} type veth peer name {net.node_veth} netns {node.netns}",
                    f"address add {net.host_ip}/30 dev {net.host_veth}",
                    f"link set {net.host_veth} up",
                ],
                "creating the veth pair",
            )
        node._configure_network()
        return node

    def _configure_network(self) -> None:
        net = self.network
        _ip_batch(
            [
                "link set lo up",
                f"address add {net.node_ip}/30 dev {net.node_veth}",
                f"link set {net.node_veth} up",
                f"route add default via {net.host_ip}",
            ],
            "configuring the node side of the veth",
            netns=self.netns,
        )
        # The node routes between the veth and the pods' bridge; bridged traffic passes netfilter,
        # so a pod reaches a Service whose endpoint is on the same bridge (kube-proxy's DNAT).
        sysctls = " && ".join(
            f"echo 1 > /proc/sys/{name}" for name in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables")
        )
        _run(
            _nsenter(self.netns, ["sh", "-c", sysctls]),
            "enabling forwarding and bridge netfilter in the node's namespace",
        )
        _ip_batch(
            [f"route add {cidr} via {net.node_ip} dev {net.host_veth}" for cidr in (net.pod_cidr, net.service_cidr)],
            "routing the pod and service ranges to the node",
        )

    # -- programs -----------------------------------------------------------------------------
    def containerd_argv(self) -> list[str]:
        config = self.dir / "containerd.toml"
        config.write_text(self.containerd_config())
        cni_dir = self.dir / "cni"
        cni_dir.mkdir(parents=True, exist_ok=True)
        (cni_dir / "10-soundmind.conflist").write_text(json.dumps(self.cni_config(), indent=2) + "\n")
        return _nsenter(self.netns, [shutil.which("containerd") or "containerd", f"--config={config}"])

    def kubelet_argv(self, kubelet: Path, ca: Path, pki: NodePKI) -> list[str]:
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self.kubelet_config(ca, pki), sort_keys=False))
        return _nsenter(
            self.netns,
            [
                str(kubelet),
                f"--config={config}",
                f"--kubeconfig={self.kubelet_kubeconfig}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.network.node_ip}",
                f"--node-labels={REAL_NODE_LABEL}=true",
            ],
        )

    def kube_proxy_argv(self, kube_proxy: Path) -> list[str]:
        config = self.dir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(self.kube_proxy_config(), sort_keys=False))
        return _nsenter(self.netns, [str(kube_proxy), f"--config={config}"])

    def prepare_cgroups(self) -> None:
        """Create the kubelet's cgroupRoot in every hierarchy (the kubelet refuses a missing one)."""
        for path in self._cgroups():
            path.mkdir(exist_ok=True)
            # A new cgroup-v1 cpuset has no CPUs and no memory nodes: nothing could run in it.
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path.parent / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((path.parent / name).read_text())

    def write_images(self, bin_dir: Path) -> list[Path]:
        """The pause and busybox image archives, to import into containerd."""
        directory = self.dir / "images"
        directory.mkdir(parents=True, exist_ok=True)
        applets = _run([str(BUSYBOX), "--list"], "listing busybox's applets").split()
        busybox = [LayerFile("bin/busybox", BUSYBOX), LayerFile("tmp", mode=0o1777)]
        busybox += [LayerFile(f"bin/{applet}", link="busybox") for applet in applets if applet != "busybox"]
        return [
            write_image_archive(
                directory / "pause.tar", PAUSE_IMAGE, [LayerFile("pause", bin_dir / "pause")], ["/pause"]
            ),
            write_image_archive(directory / "busybox.tar", BUSYBOX_IMAGE, busybox, ["/bin/sh"], env=("PATH=/bin",)),
        ]

    @property
    def registry_config_dir(self) -> Path:
        """containerd's registry host configuration (its CRI ``config_path``): a folder per ``host:port``."""
        return self.dir / "certs.d"

    def trust_registry(self, host: str, ca: Path) -> None:
        """Let containerd pull from the HTTPS registry at ``host`` (host:port), whose certificate ``ca``
        signed; containerd reads the folder at each pull, no restart.

        The CA goes in as ``<host:port>/ca.crt``, which containerd reads where the folder has no
        hosts.toml. containerd 1.6 (Debian 12's) ignores a hosts.toml's top-level ``ca``, and a
        ``[host]`` entry with one leaves the server itself as a last, CA-less fallback: a digest the
        registry lacks then reads as "certificate signed by unknown authority" instead of "not found"."""
        directory = self.registry_config_dir / host
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca, directory / "ca.crt")

    def import_argv(self, archive: Path) -> list[str]:
        """The command that imports an image archive (``docker save`` or OCI layout) for the CRI."""
        return ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", "images", "import", str(archive)]

    # -- configuration (pure: paths and addresses only) ---------------------------------------
    def containerd_config(self) -> str:
        """containerd 1.6's config (version 2): everything it keeps under the cluster directory,
        except the shims' sockets (fixed at /run/containerd/s in 1.6)."""
        base = self.dir / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"'

        def q(value) -> str:  # a TOML basic string: JSON's escapes are TOML's
            return json.dumps(str(value))

        return f"""version = 2
root = {q(base / "root")}
state = {q(base / "state")}
temp = {q(base / "tmp")}

[grpc]
  address = {q(self.containerd_socket)}

[plugins."io.containerd.internal.v1.opt"]
  path = {q(base / "opt")}

{cri}]
  sandbox_image = {q(normalized_reference(PAUSE_IMAGE))}
  # The sandbox's oom_score_adj cannot go below this machine's own (not lowerable here).
  restrict_oom_score_adj = true
  # Pod network namespaces under <state>/netns, not /var/run/netns.
  netns_mounts_under_state_dir = true

{cri}.registry]
  config_path = {q(self.registry_config_dir)}

{cri}.cni]
  bin_dir = {q(CNI_BIN_DIR)}
  conf_dir = {q(self.dir / "cni")}

{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri}.containerd.runtimes.runc.options]
  Root = {q(base / "runc")}
"""

    def cni_config(self) -> dict:
        net = self.network
        return {
            "cniVersion": "1.0.0",
            "name": self.workdir.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,  # the host routes the pod range back: no address translation
                    "hairpinMode": True,  # a pod reaches itself through its own Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": net.pod_cidr}]],
                        "dataDir": str(self.dir / "cni-ipam"),
                    },
                }
            ],
        }

    def kubelet_config(self, ca: Path, pki: NodePKI) -> dict:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # This machine has cgroups v1 (with cgroup2 mounted beside) and no systemd.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "address": self.network.node_ip,
            "port": 10250,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "tlsCertFile": str(pki.kubelet_serving.cert),
            "tlsPrivateKeyFile": str(pki.kubelet_serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "Webhook"},
            # Defaults outside --root-dir, moved into the cluster directory.
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(self.dir / "volume-plugins"),
            # Imported images cannot be pulled again: never collect them (100 turns it off).
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # A node on a developer's disk: evict only when the disk is all but full, not at the
            # default 85-90% that would taint a dedicated node; nor refuse to start beside swap.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "failSwapOn": False,
            # Imported images are preloaded, whatever a registry pull of the same image ID recorded;
            # every other image present is checked against the pod's pull credentials.
            "imagePullCredentialsVerificationPolicy": "NeverVerifyAllowlistedImages",
            "preloadedImagesVerificationAllowlist": list(PRELOADED_REPOSITORIES),
        }

    def kube_proxy_config(self) -> dict:
        net = self.network
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            # nftables: GA since v1.33 and the mode upstream develops; it needs only `nft`, and its
            # rules live in the node's namespace like iptables' would.
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.kube_proxy_kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": net.node_ip,
            "clusterCIDR": net.pod_cidr,  # traffic from elsewhere (the host) to a Service is masqueraded
            "healthzBindAddress": f"{net.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
            "metricsBindAddress": "127.0.0.1:10249",
            # The connection-tracking table's size is the whole machine's (not per namespace): leave it.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }

    # -- teardown -----------------------------------------------------------------------------
    def tear_down(self, timeout: float = 20.0) -> list[str]:
        """Remove what the node's stopped programs left: containerd's shims and their sockets, the
        containers' processes and cgroups, every mount under the cluster directory (pod network
        namespaces, volumes, rootfs, the node's namespace), the kubelet's log links, go-cni's cached
        results, and the veth (its routes go with it). Returns what could not be removed."""
        problems: list[str] = []
        for pid, argv in _processes():
            shim = shim_of(argv, self.containerd_socket)
            if shim is not None:
                _kill(pid)
                (_SHIM_SOCKETS / shim).unlink(missing_ok=True)
        problems += self._remove_cgroups(time.monotonic() + timeout)
        # Before the namespace goes: its end of the pair would take the host's along, while we look.
        veth = Path(f"/sys/class/net/{self.network.host_veth}")
        if veth.exists():
            try:
                _run(["ip", "link", "delete", self.network.host_veth], "deleting the veth pair")
            except ClusterError as error:
                if veth.exists():
                    problems.append(str(error))
        for mount in mounts_under(_mountinfo(), self.workdir):
            if _LIBC.umount2(str(mount).encode(), 0) != 0 and ctypes.get_errno() != errno.EINVAL:
                # Still busy (EINVAL: no longer a mount): detach it, the kernel frees it with its last user.
                if _LIBC.umount2(str(mount).encode(), _MNT_DETACH) != 0:
                    problems.append(f"unmount {mount}: {os.strerror(ctypes.get_errno())}")
        for link in self._log_links():
            link.unlink(missing_ok=True)
        for sandbox in self.sandboxes():
            for result in _CNI_RESULTS.glob(f"*-{sandbox}-*"):
                result.unlink(missing_ok=True)
        return problems

    def sandboxes(self) -> list[str]:
        """The ids of the pod sandboxes containerd knows (their directories go when they are removed)."""
        directory = self.dir / "containerd" / "root" / "io.containerd.grpc.v1.cri" / "sandboxes"
        return sorted(entry.name for entry in directory.iterdir()) if directory.is_dir() else []

    def leftovers(self) -> list[str]:
        """What of the node is still on this machine (empty after :meth:`tear_down`): processes,
        mounts, cgroups, the veth, routes into the node's range, container log links."""
        found = []
        for pid, argv in _processes():
            mentions = any(str(self.workdir) in arg for arg in argv)
            if (mentions or shim_of(argv, self.containerd_socket)) and not _zombie(pid):
                found.append(f"process {pid}: {' '.join(argv)[:200]}")
        found += [f"mount {point}" for point in mounts_under(_mountinfo(), self.workdir)]
        found += [f"cgroup {path}" for path in self._cgroups() if path.exists()]
        if Path(f"/sys/class/net/{self.network.host_veth}").exists():
            found.append(f"interface {self.network.host_veth}")
        found += [
            f"network {network} (address or route)"
            for network in used_networks()
            if network.overlaps(self.network.claim)
        ]
        found += [f"log link {link}" for link in self._log_links()]
        return found

    def _log_links(self) -> list[Path]:
        """The kubelet's links in /var/log/containers to its containers' logs (ours: in the cluster directory)."""
        if not _CONTAINER_LOG_LINKS.is_dir():
            return []
        return [
            link
            for link in _CONTAINER_LOG_LINKS.iterdir()
            if link.is_symlink() and os.readlink(link).startswith(f"{self.workdir}/")
        ]

    def _cgroups(self) -> list[Path]:
        """The kubelet's cgroupRoot in each hierarchy."""
        return [mount / self.cgroup_root.lstrip("/") for mount in cgroup_mounts(_mountinfo())]

    def _remove_cgroups(self, deadline: float) -> list[str]:
        """Kill every process left in the node's cgroups (the containers: their shims are gone),
        then remove the cgroups, deepest first."""
        roots = [root for root in self._cgroups() if root.is_dir()]
        while True:
            pids = {int(pid) for root in roots for procs in root.rglob("cgroup.procs") for pid in _lines(procs)}
            if not pids:
                break
            if time.monotonic() > deadline:
                return [f"processes {sorted(pids)} did not die in the node's cgroups {self.cgroup_root}"]
            for pid in pids:
                _kill(pid)
            time.sleep(0.05)
        problems = []
        for root in roots:
            for directory in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)) + [root]:
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as error:
                    problems.append(f"remove cgroup {directory}: {error.strerror}")
        return problems


# -- pure helpers (unit-tested) ---------------------------------------------------------------
def shim_of(argv: list[str], socket: Path) -> str | None:
    """For a containerd-shim-runc-v2 of the containerd at ``socket``: the name of its socket in
    /run/containerd/s (containerd 1.6 names it sha256(<containerd socket>/<namespace>/<id>)); None
    for any other process."""
    if not argv or Path(argv[0]).name != "containerd-shim-runc-v2":
        return None
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    if flags.get("-address") != str(socket):
        return None
    return hashlib.sha256(f"{socket}/{flags.get('-namespace', '')}/{flags.get('-id', '')}".encode()).hexdigest()


def _mount_fields(mountinfo: str) -> Iterator[tuple[Path, str]]:
    """(mount point, filesystem type) of each line of /proc/self/mountinfo."""
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        point = fields.split(" ")[4]
        # The kernel escapes space, tab, newline and backslash in octal.
        point = point.encode().decode("unicode_escape").encode("latin-1").decode()
        yield Path(point), tail.split(" ")[0]


def mounts_under(mountinfo: str, directory: Path) -> list[Path]:
    """The mounts inside ``directory`` in the order to unmount them: deepest first, and on one
    point the latest first (a point mounted twice comes twice)."""
    inside = [point for point, _ in _mount_fields(mountinfo) if point.is_relative_to(directory)]
    order = sorted(range(len(inside)), key=lambda index: (-len(inside[index].parts), -index))
    return [inside[index] for index in order]


def cgroup_mounts(mountinfo: str) -> list[Path]:
    """Every cgroup hierarchy's mount point (v1 controllers, and the v2 one beside them)."""
    return [point for point, kind in _mount_fields(mountinfo) if kind in ("cgroup", "cgroup2")]


# -- system ------------------------------------------------------------------------------------
def _run(argv: list[str], doing: str, stdin: str | None = None) -> str:
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ClusterError(f"real node: {doing}: {error}") from error
    if result.returncode != 0:
        raise ClusterError(
            f"real node: {doing}: `{' '.join(argv)}` exited {result.returncode}: {result.stderr.strip()[:1000]}"
        )
    return result.stdout


def _nsenter(netns: Path, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={netns}", "--", *argv]


def _ip_batch(commands: list[str], doing: str, netns: Path | None = None) -> None:
    argv = ["ip", "-batch", "-"]
    _run(_nsenter(netns, argv) if netns else argv, doing, stdin="\n".join(commands) + "\n")


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:  # the cgroup went while we looked
        return []


def _processes() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            yield int(entry.name), argv[:-1] if argv and argv[-1] == "" else argv


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True  # gone


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
