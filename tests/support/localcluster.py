"""A real Kubernetes control plane on this machine with kwok-simulated GPU nodes and a real node.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real programs (built by
hack/tools.sh); kwok plays the GPU nodes' kubelets: it keeps the fake nodes Ready and walks pods
through the lifecycle described in :mod:`tests.support.sim`. The real node (:mod:`tests.support.realnode`,
root only) runs pods for real. Everything lives in one temporary directory (certs, kubeconfigs, etcd
data, the node's containerd and kubelet, logs) that :meth:`LocalCluster.stop` removes after ending
the processes it started, by process group, and only those, and removing what the real node left.
Without a real node the API server listens on loopback; with one, on the node's link to the host.

:class:`SimulatedNodes` is the kwok half on its own, for a cluster started elsewhere (a kind cluster
given to the tests by ``SOUNDMIND_TEST_KUBECONFIG``): a local kwok process with the same Stages and
nodes, stopped with the nodes it created deleted. Both start kwok and create the nodes with
:meth:`_Components._start_kwok_and_nodes`.

Command line (used by hack/cluster.sh): ``python -m tests.support.localcluster up|down|status``, and
``load-images <archive>...`` for the real node.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.support import realnode, sim
from tests.support.errors import ClusterError
from tests.support.pki import FRONT_PROXY_CLIENT_NAME, CertPair, ClusterPKI, NodePKI, create_node_pki, create_pki
from tests.support.realnode import RealNode
from tests.support.stages import stages_yaml

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
# Simulated pods' IPs: outside kind's pod (10.244.0.0/16) and service (10.96.0.0/16) ranges, so on a
# kind cluster they never duplicate a real pod's address.
POD_CIDR = "10.250.0.1/16"
_LOOPBACK = "127.0.0.1"
_DIR_PREFIX = "soundmind-cluster-"
_KWOK_DIR_PREFIX = "soundmind-kwok-"  # a SimulatedNodes' directory (kwok's config and log)
_DIR_STATE = "cluster.json"
NODE_LEASE_SECONDS = 40  # kwok renews each simulated node's Lease in kube-node-lease well within this
# Kubernetes' own gang scheduling (v1.37, beta, off by default): the GenericWorkload gate serves the
# Workload and PodGroup APIs (API server), runs the PodGroup protection controller (controller
# manager) and enables the scheduler's GangScheduling plugin, which has no gate of its own; the
# beta group version must also be switched on in the API server.
GANG_SCHEDULING_FEATURE_GATES = "GenericWorkload=true"
GANG_SCHEDULING_RUNTIME_CONFIG = "scheduling.k8s.io/v1beta1=true"
# How often the HPA controller reads metrics and rescales (default 15 s): the autoscaling test and demo
# watch a load come and go in a couple of minutes. Scale-down stabilization is per HPA (its behavior).
HPA_SYNC_PERIOD_SECONDS = 2


def default_cache_dir() -> Path:
    """Where hack/tools.sh and hack/cluster.sh keep their files (same rule as hack/venv.sh)."""
    if os.environ.get("SOUNDMIND_CACHE"):
        return Path(os.environ["SOUNDMIND_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "soundmind"


def default_bin_dir() -> Path:
    return default_cache_dir() / "bin" / "current"


def missing_binaries(bin_dir: Path, names: tuple[str, ...] = BINARIES) -> list[str]:
    return [name for name in names if not os.access(bin_dir / name, os.X_OK)]


def _free_port(address: str = _LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# How the components' logs start an error line: cobra, klog (error, fatal), Go panics; and how they
# mark one: JSON (etcd, kwok), logrus text (containerd).
_ERROR_STARTS = ("Error:", "E1", "E0", "F1", "F0", "panic:")
_ERROR_MARKS = (
    '"level":"error"',
    '"level":"ERROR"',
    '"level":"fatal"',
    '"level":"panic"',
    "level=error",
    "level=fatal",
)


def _log_excerpt(path: Path, lines: int = 25) -> str:
    """The log's error lines (a flag error comes before pages of usage text) and its last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text[:-lines] if line.startswith(_ERROR_STARTS) or any(m in line for m in _ERROR_MARKS)]
    excerpt = errors[:10] + (["..."] if errors else []) + text[-lines:]
    return "\n".join(line[:400] for line in excerpt)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks after boot): tells the process from a later one given its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_started_in(pid: int, workdir: Path) -> bool:
    """Whether ``pid`` is still one of our components: each is given paths inside its cluster dir, so
    a recycled pid belonging to something else never matches."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(workdir) in cmdline


@dataclass
class Component:
    name: str
    pid: int
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def exited(self) -> bool:
        if self.process is not None:
            return self.process.poll() is not None
        return not _pid_alive(self.pid)


def _kubeconfig(server: str, ca: CertPair, user: CertPair, name: str) -> dict:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "soundmind-local", "cluster": {"server": server, "certificate-authority-data": b64(ca.cert)}}
        ],
        "users": [
            {"name": name, "user": {"client-certificate-data": b64(user.cert), "client-key-data": b64(user.key)}}
        ],
        "contexts": [{"name": "soundmind-local", "context": {"cluster": "soundmind-local", "user": name}}],
        "current-context": "soundmind-local",
    }


# (method, path, JSON body) -> (HTTP status, body); raises OSError while the API server is unreachable.
ApiRequest = Callable[[str, str, "dict | None"], "tuple[int, bytes]"]


class _Components:
    """Programs this process started, each in its own process group, with their files in one
    directory; and the simulated nodes, through the cluster's API (:meth:`_request`)."""

    def __init__(self, workdir: Path, components: list[Component], detach: bool = False):
        self.workdir = workdir
        self.components = components
        self.detach = detach
        self.created_nodes: list[str] = []  # by _start_kwok_and_nodes (409: it existed already)

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        raise NotImplementedError

    def _state(self) -> dict:
        return {
            "workdir": str(self.workdir),
            # While the process that started them lives, a cluster with no component yet (being
            # started) is not a dead one.
            "owner": {"pid": os.getpid(), "start": _process_start(os.getpid())},
            "components": [{"name": c.name, "pid": c.pid, "log": str(c.log)} for c in self.components],
        }

    def save_state(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self._state(), indent=2) + "\n")

    # -- kwok and its nodes (the one way both a LocalCluster and SimulatedNodes start them) -----
    def _start_kwok_and_nodes(
        self, bin_dir: Path, kubeconfig: Path, nodes: int, shape: sim.NodeShape, deadline: float
    ) -> None:
        """Start kwok against ``kubeconfig`` with the Stages of :mod:`tests.support.stages` (a
        config file: no CRDs needed), managing only nodes labelled ``sim.MANAGED_NODE_LABEL``;
        create ``nodes`` simulated nodes (recording in ``created_nodes`` those that did not exist);
        return once that many are Ready."""
        config = self.workdir / "kwok.yaml"
        config.write_text(stages_yaml())
        self._spawn(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={sim.MANAGED_NODE_LABEL}=true",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                f"--cidr={POD_CIDR}",
            ],
        )
        for index in range(nodes):
            manifest = sim.node_manifest(index, shape)
            name = manifest["metadata"]["name"]
            try:
                status, body = self._request("POST", "/api/v1/nodes", manifest)
            except OSError as error:
                raise ClusterError(f"creating node {name}: {error}") from error
            if status == 201:
                self.created_nodes.append(name)
            elif status != 409:
                raise ClusterError(f"creating node {name}: HTTP {status}: {body[:500]!r}")
        self._wait(f"{nodes} simulated node(s) Ready", lambda: self._nodes_ready(nodes), deadline)

    def _nodes_ready(self, count: int) -> bool:
        nodes = self._get(f"/api/v1/nodes?labelSelector={sim.MANAGED_NODE_LABEL}%3Dtrue")
        return bool(nodes) and sum(map(_node_ready, nodes["items"])) >= count

    def _get(self, path: str, raw: bool = False):
        return _api_get(self._request, path, raw)

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        """Start ``argv`` as the component ``name``, its output in logs/<name>.log."""
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals exactly it
                preexec_fn=None if self.detach else _die_with_parent,
            )
        self.components.append(Component(name, process.pid, log_path, process))
        self.save_state(self.workdir / _DIR_STATE)  # lets a later start tidy up after a killed owner

    def _stop_components(self) -> None:
        """End our components by process group, newest first (the API server drains faster while
        etcd still runs)."""
        for component in reversed(self.components):
            if component.exited() or not _pid_started_in(component.pid, self.workdir):
                continue
            _signal_group(component.pid, signal.SIGTERM)
            give_up = time.monotonic() + 10
            while not component.exited() and time.monotonic() < give_up:
                time.sleep(0.05)
            if not component.exited():
                _signal_group(component.pid, signal.SIGKILL)
        for component in self.components:
            if component.process is not None:
                component.process.wait(timeout=10)
        self.components = []

    def _remove_files(self) -> None:
        if self.workdir.name.startswith((_DIR_PREFIX, _KWOK_DIR_PREFIX)):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _wait(self, what: str, condition: Callable[[], bool], deadline: float) -> None:
        """Poll ``condition`` until it holds; fail early, with its log, when a component dies."""
        while True:
            for component in self.components:
                if component.exited():
                    raise ClusterError(
                        f"{component.name} exited while waiting for {what}; last lines of {component.log}:\n"
                        + _log_excerpt(component.log)
                    )
            if condition():
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name} ({c.log}):\n{_log_excerpt(c.log, 10)}" for c in self.components)
                raise ClusterError(f"timed out waiting for {what}; component logs:\n{logs}")
            time.sleep(0.2)


def _api_get(request: ApiRequest, path: str, raw: bool = False):
    """The decoded object (or raw body) at ``path``; None for 404 or while unreachable."""
    try:
        status, body = request("GET", path, None)
    except OSError:
        return None
    if status != 200:
        return None
    return body if raw else json.loads(body)


def _node_ready(node: dict) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _recorded_real_node(workdir: Path, state: dict) -> RealNode | None:
    """The real node a cluster's state file records (its network slot), if any."""
    recorded = state.get("real_node")
    return RealNode(workdir, realnode.NodeNetwork(int(recorded["slot"]))) if recorded else None


class LocalCluster(_Components):
    """A running local control plane. Create with :meth:`start` (or :meth:`from_state` for one
    started by another process); end with :meth:`stop`."""

    def __init__(
        self,
        workdir: Path,
        server: str,
        components: list[Component],
        detach: bool = False,
        gang_scheduling: bool = True,
        real_node: RealNode | None = None,
    ):
        super().__init__(workdir, components, detach)
        self.server = server
        self.gang_scheduling = gang_scheduling
        self.real_node = real_node  # None: kwok's simulated nodes only

    # -- paths and addresses ------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters), self-contained."""
        return self.workdir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def address(self) -> str:
        """Where the API server listens and what it advertises: on the real node's link to the host,
        which pods reach (the `kubernetes` Service's endpoint); loopback without a real node."""
        return self.real_node.network.host_ip if self.real_node else _LOOPBACK

    @property
    def service_cidr(self) -> str:
        """ClusterIPs: a range of the real node's own (the host routes it to that node), or the
        default range, never routed, without one."""
        return self.real_node.network.service_cidr if self.real_node else SERVICE_CLUSTER_IP_RANGE

    @property
    def kubernetes_service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the API server gives it its range's first address."""
        return str(ipaddress.IPv4Network(self.service_cidr)[1])

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        bin_dir: Path,
        *,
        nodes: int = sim.DEFAULT_NODE_COUNT,
        node_shape: sim.NodeShape = sim.DEFAULT_NODE_SHAPE,
        kwok: bool = True,
        gang_scheduling: bool = True,
        real_node: bool = True,
        timeout: float = 120.0,
        detach: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> LocalCluster:
        """Start every component, create ``nodes`` simulated nodes, and return once all are Ready.
        Without ``kwok``: the control plane alone, no kwok and no nodes (what a kind cluster looks
        like to :class:`SimulatedNodes`). Without ``gang_scheduling``: no Workload/PodGroup API and
        no GangScheduling plugin, as on most clusters today. With ``real_node`` (needs root): also a
        node that runs pods for real, with kube-proxy (:mod:`tests.support.realnode`), Ready, with
        the pause and busybox images imported; :meth:`import_images` adds more.

        Unless ``detach``, the components die with this process even when it is killed before it can
        call :meth:`stop`. On any failure the components started so far are stopped and
        :class:`ClusterError` names the component that failed, with the tail of its log; its files are
        kept until the next cluster starts."""
        missing = missing_binaries(bin_dir)
        if missing:
            raise ClusterError(f"missing binaries in {bin_dir}: {', '.join(missing)} (build them: hack/tools.sh)")
        if real_node and (lacking := realnode.missing_prerequisites(bin_dir)):
            raise ClusterError(
                f"the real node needs {'; '.join(lacking)}. Or start the cluster without it: "
                "LocalCluster.start(real_node=False), `localcluster up --no-real-node`, SOUNDMIND_REAL_NODE=false"
            )
        began = time.monotonic()
        deadline = began + timeout
        _remove_dead_cluster_dirs()
        workdir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        cluster = cls(workdir, "", [], detach=detach, gang_scheduling=gang_scheduling)
        try:
            if real_node:
                cluster.real_node = RealNode.create(workdir, cluster._record)
            apiserver_port = _free_port(cluster.address)
            cluster.server = f"https://{cluster.address}:{apiserver_port}"
            cluster._launch(bin_dir, apiserver_port, deadline, log)
            if kwok:
                kubeconfig = cluster.workdir / "kwok.kubeconfig"
                cluster._start_kwok_and_nodes(bin_dir, kubeconfig, nodes, node_shape, deadline)
            cluster._wait(
                "the controller manager (default ServiceAccount)",
                lambda: cluster._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                deadline,
            )
            if cluster.real_node:
                cluster._wait_for_real_node(deadline)
        except BaseException as error:
            try:
                cluster.stop(keep_files=True)  # the logs are what the error message points at
            except ClusterError as teardown:
                error.add_note(str(teardown))
            raise
        simulated = f"{nodes} simulated node(s)" if kwok else "no kwok"
        gang = "gang scheduling (PodGroup API)" if gang_scheduling else "no gang scheduling"
        real = f"real node {realnode.NODE_NAME}" if cluster.real_node else "no real node"
        log(f"cluster ready in {time.monotonic() - began:.1f}s: {simulated}, {real}, {gang}, {cluster.server}")
        return cluster

    def _record(self, node: RealNode) -> None:
        self.real_node = node
        self.save_state(self.workdir / _DIR_STATE)

    def _launch(self, bin_dir: Path, apiserver_port: int, deadline: float, log: Callable[[str], None]) -> None:
        pki = create_pki(
            self.pki_dir,
            (
                *dict.fromkeys((self.address, _LOOPBACK)),
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                self.kubernetes_service_ip,
            ),
        )
        users = [
            ("admin", pki.admin),
            ("controller-manager", pki.controller_manager),
            ("scheduler", pki.scheduler),
            ("kwok", pki.kwok),
        ]
        node_pki = None
        if self.real_node:
            node_pki = create_node_pki(pki.ca, self.pki_dir, realnode.NODE_NAME, self.real_node.network.node_ip)
            users += [("kubelet", node_pki.kubelet), ("kube-proxy", node_pki.kube_proxy)]
            # containerd first: it needs nothing of the control plane, and is up by the time its
            # images are imported.
            self._spawn("containerd", self.real_node.containerd_argv())
        for name, user in users:
            path = self.workdir / f"{name}.kubeconfig"
            path.write_text(yaml.safe_dump(_kubeconfig(self.server, pki.ca, user, name)))
            path.chmod(0o600)

        etcd_port, etcd_peer_port = _free_port(), _free_port()
        self._spawn("etcd", [str(bin_dir / "etcd"), *self._etcd_args(etcd_port, etcd_peer_port)])
        self._wait("etcd", lambda: self._etcd_healthy(etcd_port), deadline)
        log("etcd is up")
        self._spawn(
            "kube-apiserver",
            [str(bin_dir / "kube-apiserver"), *self._apiserver_args(pki, node_pki, apiserver_port, etcd_port)],
        )
        self._wait("kube-apiserver /readyz", lambda: self._get("/readyz", raw=True) == b"ok", deadline)
        log("kube-apiserver is ready")
        self._spawn(
            "kube-controller-manager", [str(bin_dir / "kube-controller-manager"), *self._controller_manager_args(pki)]
        )
        self._spawn("kube-scheduler", [str(bin_dir / "kube-scheduler"), *self._scheduler_args()])
        if self.real_node:
            self._launch_real_node(bin_dir, pki.ca.cert, node_pki, deadline)

    def _launch_real_node(self, bin_dir: Path, ca: Path, node_pki: NodePKI, deadline: float) -> None:
        """With containerd started: import the node's own images, then start the kubelet and kube-proxy."""
        node = self.real_node
        self._wait("containerd's socket", node.containerd_socket.exists, deadline)
        self.import_images(node.write_images(bin_dir))
        node.prepare_cgroups()
        self._spawn("kubelet", node.kubelet_argv(bin_dir / "kubelet", ca, node_pki))
        self._spawn("kube-proxy", node.kube_proxy_argv(bin_dir / "kube-proxy"))

    def _wait_for_real_node(self, deadline: float) -> None:
        self._wait(
            f"the real node {realnode.NODE_NAME} Ready",
            lambda: _node_ready(self._get(f"/api/v1/nodes/{realnode.NODE_NAME}") or {}),
            deadline,
        )
        # Its /healthz answers 200 once the Services are programmed, and the host reaches the node.
        self._wait("kube-proxy /healthz", lambda: _http_ok(self.real_node.healthz_url), deadline)

    def import_images(self, archives: Iterable[Path]) -> None:
        """Import image archives (``docker save`` or OCI image layout tars) into the real node's
        containerd, where its pods find them by their tags (``imagePullPolicy: Never`` or
        ``IfNotPresent``; a tag without a registry is Docker Hub's, as the kubelet also reads it)."""
        if self.real_node is None:
            raise ClusterError(f"the cluster in {self.workdir} has no real node to import images into")
        log = self.workdir / "logs" / "containerd.log"
        for archive in archives:
            if not Path(archive).is_file():
                raise ClusterError(f"no image archive at {archive}")
            try:
                result = subprocess.run(
                    self.real_node.import_argv(Path(archive).resolve()), capture_output=True, text=True, timeout=600
                )
            except subprocess.TimeoutExpired as error:
                raise ClusterError(f"containerd: importing {archive} took over {error.timeout:g}s") from error
            if result.returncode != 0:
                raise ClusterError(
                    f"containerd: importing {archive} failed: {result.stderr.strip()[:1000]}; last lines of {log}:\n"
                    + _log_excerpt(log)
                )

    def stop(self, keep_files: bool = False) -> None:
        """End our components (only those), remove what the real node left on the machine, then
        remove the cluster directory unless ``keep_files``. Raises :class:`ClusterError` naming what
        of the real node could not be removed (the directory then stays, for the next start to
        retry)."""
        self._stop_components()
        problems = self.real_node.tear_down() if self.real_node else []
        if problems:
            raise ClusterError(f"the real node left, in {self.workdir}: " + "; ".join(problems))
        if not keep_files:
            self._remove_files()

    def restart_apiserver(self, down_seconds: float = 0.0, timeout: float = 60.0) -> None:
        """Stop kube-apiserver (SIGTERM to its process group, as a rolling upgrade would; SIGKILL
        if it has not drained in 10 s), keep it
        down ``down_seconds``, start it again with the same arguments, and return once /readyz
        answers. etcd, and with it every object, stays. Call it from the thread that lives longest
        (the main one): the new process dies with the thread that starts it (PR_SET_PDEATHSIG)."""
        old = next(c for c in self.components if c.name == "kube-apiserver" and not c.exited())
        program, *args = Path(f"/proc/{old.pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
        _signal_group(old.pid, signal.SIGTERM)
        give_up = time.monotonic() + 10  # it drains its watches first; not forever
        while not old.exited() and time.monotonic() < give_up:
            time.sleep(0.05)
        if not old.exited():
            _signal_group(old.pid, signal.SIGKILL)
        if old.process is not None:
            old.process.wait(timeout=10)
        self.components.remove(old)
        time.sleep(down_seconds)
        self._spawn("kube-apiserver", [program, *args])
        self._wait(
            "kube-apiserver /readyz after a restart",
            lambda: self._get("/readyz", raw=True) == b"ok",
            time.monotonic() + timeout,
        )

    def healthy(self) -> bool:
        """Every component still runs and the API server answers /readyz."""
        if not self.components or any(c.exited() or not _pid_started_in(c.pid, self.workdir) for c in self.components):
            return False
        try:
            return self._get("/readyz", raw=True) == b"ok"
        except (OSError, ClusterError):
            return False

    # -- state file (hack/cluster.sh keeps one cluster across shells) ---------------------------
    def _state(self) -> dict:
        state = {"server": self.server, "kubeconfig": str(self.kubeconfig), **super()._state()}
        if self.real_node:
            state["real_node"] = {"slot": self.real_node.network.slot}
        return state

    @classmethod
    def from_state(cls, path: Path) -> LocalCluster | None:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        components = [Component(c["name"], int(c["pid"]), Path(c["log"])) for c in state["components"]]
        workdir = Path(state["workdir"])
        return cls(workdir, state["server"], components, real_node=_recorded_real_node(workdir, state))

    # -- components ---------------------------------------------------------------------------
    def _etcd_args(self, port: int, peer_port: int) -> list[str]:
        client, peer = f"http://{_LOOPBACK}:{port}", f"http://{_LOOPBACK}:{peer_port}"
        return [
            "--name=soundmind",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=soundmind={peer}",
            "--unsafe-no-fsync=true",  # throwaway data; fsync dominates start-up on a busy disk
            "--log-level=warn",
        ]

    def _apiserver_args(self, pki: ClusterPKI, node_pki: NodePKI | None, port: int, etcd_port: int) -> list[str]:
        return [
            f"--advertise-address={self.address}",  # there may be no default route to pick one from
            f"--bind-address={self.address}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver'}",
            f"--etcd-servers=http://{_LOOPBACK}:{etcd_port}",
            "--authorization-mode=Node,RBAC",
            f"--client-ca-file={pki.ca.cert}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={self.service_cidr}",
            "--allow-privileged=true",
            *self._kubelet_client_args(pki, node_pki),
            # Aggregation layer: lets an aggregated API (metrics adapters) be registered later.
            f"--requestheader-client-ca-file={pki.front_proxy_ca.cert}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-uid-headers=X-Remote-Uid",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
            f"--proxy-client-key-file={pki.front_proxy_client.key}",
            # Off: an aggregated API is reached through its Service, and one of type ExternalName
            # may point at 127.0.0.1 (a local metrics adapter); with routing on, the API server would
            # use the Service's endpoints, which may not hold a loopback address.
            "--enable-aggregator-routing=false",
            "--profiling=false",
            *self._gang_args(runtime_config=True),
        ]

    def _kubelet_client_args(self, pki: ClusterPKI, node_pki: NodePKI | None) -> list[str]:
        if node_pki is None:
            # Endpoints may not hold a loopback address, so the `kubernetes` Service stays without them.
            return ["--endpoint-reconciler-type=none"]
        return [
            # For logs, exec and port-forward: the kubelet's serving certificate is the cluster CA's,
            # and its node's InternalIP the address to reach it at (its Hostname resolves nowhere).
            f"--kubelet-certificate-authority={pki.ca.cert}",
            f"--kubelet-client-certificate={node_pki.apiserver_kubelet_client.cert}",
            f"--kubelet-client-key={node_pki.apiserver_kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _controller_manager_args(self, pki: ClusterPKI) -> list[str]:
        return [
            *self._component_args("controller-manager"),
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--cluster-name=soundmind-local",
            f"--service-cluster-ip-range={self.service_cidr}",
            *self._gang_args(),
            f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD_SECONDS}s",
        ]

    def _scheduler_args(self) -> list[str]:
        return [*self._component_args("scheduler"), *self._gang_args()]

    def _gang_args(self, runtime_config: bool = False) -> list[str]:
        if not self.gang_scheduling:
            return []
        args = [f"--feature-gates={GANG_SCHEDULING_FEATURE_GATES}"]
        return args + [f"--runtime-config={GANG_SCHEDULING_RUNTIME_CONFIG}"] if runtime_config else args

    def _component_args(self, component: str) -> list[str]:
        """What the controller manager and the scheduler share: their own kubeconfig for everything,
        no serving port, no leader election (one replica), no profiling."""
        kubeconfig = self.workdir / f"{component}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            "--profiling=false",
        ]

    # -- API access (standard library only: this runs before any client library is configured) -
    @functools.cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return context

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.server + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._ssl_context, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{_LOOPBACK}:{port}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError):
            return False


class SimulatedNodes(_Components):
    """kwok, run here, and the simulated nodes it manages, on a cluster started elsewhere (any
    kubeconfig with cluster-admin rights). :meth:`stop` ends kwok and deletes the nodes it created,
    leaving the cluster as it was found."""

    def __init__(self, workdir: Path, request: ApiRequest, components: list[Component] | None = None):
        super().__init__(workdir, components or [])
        self._api = request

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        return self._api(method, path, body)

    @classmethod
    def start(
        cls,
        bin_dir: Path,
        kubeconfig: Path,
        request: ApiRequest,
        *,
        nodes: int = sim.DEFAULT_NODE_COUNT,
        node_shape: sim.NodeShape = sim.DEFAULT_NODE_SHAPE,
        timeout: float = 60.0,
    ) -> SimulatedNodes:
        """Start kwok against ``kubeconfig`` and create ``nodes`` simulated nodes through
        ``request``; return once they are Ready. kwok dies with this process. On failure, what was
        started or created is undone and :class:`ClusterError` quotes kwok's log."""
        missing = missing_binaries(bin_dir, ("kwok",))
        if missing:
            raise ClusterError(f"missing binaries in {bin_dir}: {', '.join(missing)} (build them: hack/tools.sh)")
        _remove_dead_cluster_dirs()
        simulated = cls(Path(tempfile.mkdtemp(prefix=_KWOK_DIR_PREFIX)), request)
        try:
            simulated._start_kwok_and_nodes(
                bin_dir, kubeconfig.resolve(), nodes, node_shape, time.monotonic() + timeout
            )
        except BaseException:
            simulated.stop(keep_files=True)
            raise
        return simulated

    def stop(self, keep_files: bool = False) -> None:
        """End kwok, delete the nodes it created (their Leases go with them: owner references),
        and remove its directory unless ``keep_files``."""
        self._stop_components()
        failed = []
        for name in self.created_nodes:
            try:
                status, body = self._request("DELETE", f"/api/v1/nodes/{name}")
            except OSError as error:
                status, body = 0, str(error).encode()
            if status not in (200, 202, 404):
                failed.append(f"{name}: HTTP {status}: {body[:200]!r}")
        self.created_nodes = []
        if not keep_files:
            self._remove_files()
        if failed:
            raise ClusterError("could not delete simulated node(s): " + "; ".join(failed))


MANAGED, PARTLY_MANAGED, UNMANAGED = "managed", "partly managed", "unmanaged"


def simulation_state(nodes: list[dict], leases: list[dict], now: float, count: int) -> str:
    """Whether a kwok is already at work on the cluster's simulated nodes (``nodes``, those labelled
    ``sim.MANAGED_NODE_LABEL``, and the node ``leases`` of kube-node-lease, as API dicts; ``now`` in
    epoch seconds): a node counts when it is Ready and its Lease was renewed within its duration.
    MANAGED: at least ``count`` do (use them as they are); UNMANAGED: none does (start kwok: it
    picks up any stale labelled nodes too); PARTLY_MANAGED: some, but fewer than ``count`` (a second
    kwok would fight the first over them)."""
    renewed: dict[str, float] = {}
    for lease in leases:
        spec = lease.get("spec") or {}
        renew_time = spec.get("renewTime")
        if renew_time:
            expires = _epoch(renew_time) + float(spec.get("leaseDurationSeconds") or NODE_LEASE_SECONDS)
            renewed[lease["metadata"]["name"]] = expires
    live = sum(
        1
        for node in nodes
        if (node["metadata"].get("labels") or {}).get(sim.MANAGED_NODE_LABEL) == "true"
        and _node_ready(node)
        and renewed.get(node["metadata"]["name"], 0.0) > now
    )
    if live >= count:
        return MANAGED
    return PARTLY_MANAGED if live else UNMANAGED


def cluster_simulation_state(request: ApiRequest, count: int = sim.DEFAULT_NODE_COUNT) -> str:
    """:func:`simulation_state` of the cluster behind ``request``, read now."""
    nodes = _api_get(request, f"/api/v1/nodes?labelSelector={sim.MANAGED_NODE_LABEL}%3Dtrue")
    leases = _api_get(request, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
    if nodes is None or leases is None:
        raise ClusterError("could not list nodes and node leases (does the kubeconfig have cluster-admin?)")
    return simulation_state(nodes["items"], leases["items"], time.time(), count)


def _epoch(timestamp: str) -> float:
    """RFC 3339 (``2026-11-26T10:05:02.714870Z``, fraction optional) to epoch seconds."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to kill it when the process that started it exits."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _remove_dead_cluster_dirs() -> None:
    """Remove the directories of clusters (and of SimulatedNodes' kwoks) whose processes are all gone
    (failed starts, killed owners), with what their real node left on the machine (processes,
    cgroups, mounts, network); a directory whose real node cannot be cleaned up stays, for a later
    try (by root)."""
    for prefix in (_DIR_PREFIX, _KWOK_DIR_PREFIX):
        for path in Path(tempfile.gettempdir()).glob(f"{prefix}*/{_DIR_STATE}"):
            try:
                state = json.loads(path.read_text())
                workdir = Path(state["workdir"])
                components = [Component(c["name"], int(c["pid"]), Path(c["log"])) for c in state["components"]]
                owner = state.get("owner") or {}
                node = _recorded_real_node(workdir, state)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if owner.get("pid") and _process_start(int(owner["pid"])) == owner.get("start"):
                continue  # still being started (or stopped) by a live process
            if any(not c.exited() and _pid_started_in(c.pid, workdir) for c in components):
                continue
            if node is None or not node.tear_down():
                shutil.rmtree(workdir, ignore_errors=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: the group id is the leader's pid
    except ProcessLookupError:
        pass


# -- command line ---------------------------------------------------------------------------------
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.localcluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "load-images"])
    parser.add_argument(
        "archives", nargs="*", type=Path, help="load-images: image archives (docker save, OCI layout) for the real node"
    )
    parser.add_argument("--state", type=Path, default=default_cache_dir() / "cluster" / "state.json")
    parser.add_argument("--bin-dir", type=Path, default=default_bin_dir())
    parser.add_argument("--nodes", type=int, default=sim.DEFAULT_NODE_COUNT)
    parser.add_argument("--gpus-per-node", type=int, default=sim.DEFAULT_NODE_SHAPE.gpus)
    parser.add_argument("--no-kwok", action="store_true", help="control plane only: no kwok, no nodes")
    parser.add_argument(
        "--no-gang-scheduling",
        action="store_true",
        help="without the Workload/PodGroup API and the GangScheduling plugin (GenericWorkload off)",
    )
    parser.add_argument(
        "--no-real-node", action="store_true", help="kwok's simulated nodes only: no kubelet, so no root needed"
    )
    args = parser.parse_args(argv)
    if bool(args.archives) != (args.command == "load-images"):
        parser.error("image archives go with load-images, and load-images needs at least one")

    existing = LocalCluster.from_state(args.state)
    if args.command == "status":
        if existing and existing.healthy():
            print(existing.kubeconfig)
            return 0
        _stderr("no local cluster is running")
        return 1
    if args.command == "load-images":
        if not (existing and existing.healthy()):
            _stderr("no local cluster is running: start one first (hack/cluster.sh up)")
            return 1
        try:
            existing.import_images(args.archives)
        except ClusterError as error:
            _stderr(f"error: {error}")
            return 1
        _stderr(f"imported {len(args.archives)} image archive(s) into the real node {realnode.NODE_NAME}")
        return 0
    try:
        if args.command == "down":
            if existing:
                existing.stop()
                _stderr(f"stopped the local cluster ({existing.workdir})")
            args.state.unlink(missing_ok=True)
            return 0
        if existing and existing.healthy():
            real = f"real node {realnode.NODE_NAME}" if existing.real_node else "no real node"
            _stderr(f"reusing the running local cluster at {existing.server} ({real})")
            print(existing.kubeconfig)
            return 0
        if existing:
            _stderr("the recorded local cluster is gone or unhealthy; cleaning it up and starting a new one")
            existing.stop()
            args.state.unlink(missing_ok=True)
    except ClusterError as error:
        _stderr(f"error: {error}")
        return 1
    shape = sim.NodeShape(gpus=args.gpus_per_node)
    try:
        cluster = LocalCluster.start(
            args.bin_dir,
            nodes=args.nodes,
            node_shape=shape,
            kwok=not args.no_kwok,
            gang_scheduling=not args.no_gang_scheduling,
            real_node=not args.no_real_node,
            detach=True,
            log=_stderr,
        )
    except ClusterError as error:
        _stderr(f"error: {error}")
        return 1
    cluster.save_state(args.state)
    print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
