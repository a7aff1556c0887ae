"""A real Kubernetes control plane on loopback with kwok-simulated GPU nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real programs (built by
hack/tools.sh); kwok plays the kubelets: it keeps the fake nodes Ready and walks pods through the
lifecycle described in :mod:`tests.support.sim`. Everything lives in one temporary directory (certs,
kubeconfigs, etcd data, logs) that :meth:`LocalCluster.stop` removes after ending the processes it
started, by process group, and only those.

:class:`SimulatedNodes` is the kwok half on its own, for a cluster started elsewhere (a kind cluster
given to the tests by ``SOUNDMIND_TEST_KUBECONFIG``): a local kwok process with the same Stages and
nodes, stopped with the nodes it created deleted. Both start kwok and create the nodes with
:meth:`_Components._start_kwok_and_nodes`.

Command line (used by hack/cluster.sh): ``python -m tests.support.localcluster up|down|status``.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import functools
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tests.support import sim
from tests.support.pki import FRONT_PROXY_CLIENT_NAME, CertPair, ClusterPKI, create_pki
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


class ClusterError(RuntimeError):
    """The cluster could not be started or is not healthy; the message says which component and why."""


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOOPBACK, 0))
        return s.getsockname()[1]


# How the components' logs start an error line: cobra, klog (error, fatal), Go panics, JSON (etcd, kwok).
_ERROR_STARTS = ("Error:", "E1", "E0", "F1", "F0", "panic:")
_ERROR_JSON = ('"level":"error"', '"level":"ERROR"', '"level":"fatal"', '"level":"panic"')


def _log_excerpt(path: Path, lines: int = 25) -> str:
    """The log's error lines (a flag error comes before pages of usage text) and its last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [line for line in text[:-lines] if line.startswith(_ERROR_STARTS) or any(m in line for m in _ERROR_JSON)]
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
            bin_dir,
            "kwok",
            [
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
    def _spawn(self, bin_dir: Path, name: str, args: list[str]) -> None:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(exist_ok=True)
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [str(bin_dir / name), *args],
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
    ):
        super().__init__(workdir, components, detach)
        self.server = server
        self.gang_scheduling = gang_scheduling

    # -- paths --------------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters), self-contained."""
        return self.workdir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

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
        timeout: float = 120.0,
        detach: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> LocalCluster:
        """Start every component, create ``nodes`` simulated nodes, and return once all are Ready.
        Without ``kwok``: the control plane alone, no kwok and no nodes (what a kind cluster looks
        like to :class:`SimulatedNodes`). Without ``gang_scheduling``: no Workload/PodGroup API and
        no GangScheduling plugin, as on most clusters today.

        Unless ``detach``, the components die with this process even when it is killed before it can
        call :meth:`stop`. On any failure the components started so far are stopped and
        :class:`ClusterError` names the component that failed, with the tail of its log; its files are
        kept until the next cluster starts."""
        missing = missing_binaries(bin_dir)
        if missing:
            raise ClusterError(f"missing binaries in {bin_dir}: {', '.join(missing)} (build them: hack/tools.sh)")
        began = time.monotonic()
        deadline = began + timeout
        _remove_dead_cluster_dirs()
        workdir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX))
        apiserver_port = _free_port()
        server = f"https://{_LOOPBACK}:{apiserver_port}"
        cluster = cls(workdir, server, [], detach=detach, gang_scheduling=gang_scheduling)
        try:
            cluster._launch(bin_dir, apiserver_port, deadline, log)
            if kwok:
                kubeconfig = cluster.workdir / "kwok.kubeconfig"
                cluster._start_kwok_and_nodes(bin_dir, kubeconfig, nodes, node_shape, deadline)
            cluster._wait(
                "the controller manager (default ServiceAccount)",
                lambda: cluster._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                deadline,
            )
        except BaseException:
            cluster.stop(keep_files=True)  # the logs are what the error message points at
            raise
        simulated = f"{nodes} simulated node(s)" if kwok else "no kwok"
        gang = "gang scheduling (PodGroup API)" if gang_scheduling else "no gang scheduling"
        log(f"cluster ready in {time.monotonic() - began:.1f}s: {simulated}, {gang}, {cluster.server}")
        return cluster

    def _launch(self, bin_dir: Path, apiserver_port: int, deadline: float, log: Callable[[str], None]) -> None:
        pki = create_pki(
            self.pki_dir,
            (
                _LOOPBACK,
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ),
        )
        for name, user in (
            ("admin", pki.admin),
            ("controller-manager", pki.controller_manager),
            ("scheduler", pki.scheduler),
            ("kwok", pki.kwok),
        ):
            path = self.workdir / f"{name}.kubeconfig"
            path.write_text(yaml.safe_dump(_kubeconfig(self.server, pki.ca, user, name)))
            path.chmod(0o600)

        etcd_port, etcd_peer_port = _free_port(), _free_port()
        self._spawn(bin_dir, "etcd", self._etcd_args(etcd_port, etcd_peer_port))
        self._wait("etcd", lambda: self._etcd_healthy(etcd_port), deadline)
        log("etcd is up")
        self._spawn(bin_dir, "kube-apiserver", self._apiserver_args(pki, apiserver_port, etcd_port))
        self._wait("kube-apiserver /readyz", lambda: self._get("/readyz", raw=True) == b"ok", deadline)
        log("kube-apiserver is ready")
        self._spawn(bin_dir, "kube-controller-manager", self._controller_manager_args(pki))
        self._spawn(bin_dir, "kube-scheduler", self._scheduler_args())

    def stop(self, keep_files: bool = False) -> None:
        """End our components (only those), then remove the cluster directory unless ``keep_files``."""
        self._stop_components()
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
        self._spawn(Path(program).parent, "kube-apiserver", args)
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
        return {"server": self.server, "kubeconfig": str(self.kubeconfig), **super()._state()}

    @classmethod
    def from_state(cls, path: Path) -> LocalCluster | None:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        components = [Component(c["name"], int(c["pid"]), Path(c["log"])) for c in state["components"]]
        return cls(Path(state["workdir"]), state["server"], components)

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

    def _apiserver_args(self, pki: ClusterPKI, port: int, etcd_port: int) -> list[str]:
        return [
            f"--advertise-address={_LOOPBACK}",  # there may be no default route to pick one from
            f"--bind-address={_LOOPBACK}",
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
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            # Endpoints may not hold a loopback address, so the `kubernetes` Service stays without them.
            "--endpoint-reconciler-type=none",
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
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
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
    (failed starts, killed owners)."""
    for prefix in (_DIR_PREFIX, _KWOK_DIR_PREFIX):
        for path in Path(tempfile.gettempdir()).glob(f"{prefix}*/{_DIR_STATE}"):
            try:
                state = json.loads(path.read_text())
                workdir = Path(state["workdir"])
                components = [Component(c["name"], int(c["pid"]), Path(c["log"])) for c in state["components"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if not any(not c.exited() and _pid_started_in(c.pid, workdir) for c in components):
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
    parser.add_argument("command", choices=["up", "down", "status"])
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
    args = parser.parse_args(argv)

    existing = LocalCluster.from_state(args.state)
    if args.command == "status":
        if existing and existing.healthy():
            print(existing.kubeconfig)
            return 0
        _stderr("no local cluster is running")
        return 1
    if args.command == "down":
        if existing:
            existing.stop()
            _stderr(f"stopped the local cluster ({existing.workdir})")
        args.state.unlink(missing_ok=True)
        return 0
    if existing and existing.healthy():
        _stderr(f"reusing the running local cluster at {existing.server}")
        print(existing.kubeconfig)
        return 0
    if existing:
        _stderr("the recorded local cluster is gone or unhealthy; cleaning it up and starting a new one")
        existing.stop()
        args.state.unlink(missing_ok=True)
    shape = sim.NodeShape(gpus=args.gpus_per_node)
    try:
        cluster = LocalCluster.start(
            args.bin_dir,
            nodes=args.nodes,
            node_shape=shape,
            kwok=not args.no_kwok,
            gang_scheduling=not args.no_gang_scheduling,
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
