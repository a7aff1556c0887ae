"""A real Kubernetes control plane on loopback with kwok-simulated GPU nodes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real programs (built by
hack/tools.sh); kwok plays the kubelets: it keeps the fake nodes Ready and walks pods through the
lifecycle described in :mod:`tests.support.sim`. Everything lives in one temporary directory (certs,
kubeconfigs, etcd data, logs) that :meth:`LocalCluster.stop` removes after ending the processes it
started, by process group, and only those.

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
from pathlib import Path

import yaml

from tests.support import sim
from tests.support.pki import FRONT_PROXY_CLIENT_NAME, CertPair, ClusterPKI, create_pki
from tests.support.stages import stages_yaml

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
POD_CIDR = "10.244.0.1/16"
_LOOPBACK = "127.0.0.1"
_DIR_PREFIX = "soundmind-cluster-"
_DIR_STATE = "cluster.json"


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


def missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]


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


class LocalCluster:
    """A running local control plane. Create with :meth:`start` (or :meth:`from_state` for one
    started by another process); end with :meth:`stop`."""

    def __init__(self, workdir: Path, server: str, components: list[Component], detach: bool = False):
        self.workdir = workdir
        self.server = server
        self.components = components
        self.detach = detach

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
        timeout: float = 120.0,
        detach: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> LocalCluster:
        """Start every component, create ``nodes`` simulated nodes, and return once all are Ready.

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
        cluster = cls(workdir, f"https://{_LOOPBACK}:{apiserver_port}", [], detach=detach)
        try:
            cluster._launch(bin_dir, apiserver_port, deadline, log)
            cluster._create_nodes(nodes, node_shape)
            cluster._wait("all nodes Ready", lambda: cluster._nodes_ready(nodes), deadline)
            cluster._wait(
                "the controller manager (default ServiceAccount)",
                lambda: cluster._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                deadline,
            )
        except BaseException:
            cluster.stop(keep_files=True)  # the logs are what the error message points at
            raise
        log(f"cluster ready in {time.monotonic() - began:.1f}s: {nodes} simulated node(s), {cluster.server}")
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
        (self.workdir / "kwok.yaml").write_text(stages_yaml())

        etcd_port, etcd_peer_port = _free_port(), _free_port()
        self._spawn(bin_dir, "etcd", self._etcd_args(etcd_port, etcd_peer_port))
        self._wait("etcd", lambda: self._etcd_healthy(etcd_port), deadline)
        log("etcd is up")
        self._spawn(bin_dir, "kube-apiserver", self._apiserver_args(pki, apiserver_port, etcd_port))
        self._wait("kube-apiserver /readyz", lambda: self._get("/readyz", raw=True) == b"ok", deadline)
        log("kube-apiserver is ready")
        self._spawn(bin_dir, "kube-controller-manager", self._controller_manager_args(pki))
        self._spawn(bin_dir, "kube-scheduler", self._scheduler_args())
        self._spawn(bin_dir, "kwok", self._kwok_args())

    def stop(self, keep_files: bool = False) -> None:
        """End our components by process group, newest first (the API server drains faster while
        etcd still runs), then remove the cluster directory unless ``keep_files``."""
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
        if not keep_files and self.workdir.name.startswith(_DIR_PREFIX):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def healthy(self) -> bool:
        """Every component still runs and the API server answers /readyz."""
        if not self.components or any(c.exited() or not _pid_started_in(c.pid, self.workdir) for c in self.components):
            return False
        try:
            return self._get("/readyz", raw=True) == b"ok"
        except (OSError, ClusterError):
            return False

    # -- state file (hack/cluster.sh keeps one cluster across shells) ---------------------------
    def save_state(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "workdir": str(self.workdir),
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "components": [{"name": c.name, "pid": c.pid, "log": str(c.log)} for c in self.components],
        }
        path.write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def from_state(cls, path: Path) -> LocalCluster | None:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        components = [Component(c["name"], int(c["pid"]), Path(c["log"])) for c in state["components"]]
        return cls(Path(state["workdir"]), state["server"], components)

    # -- components ---------------------------------------------------------------------------
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
            "--enable-aggregator-routing=true",
            "--profiling=false",
        ]

    def _controller_manager_args(self, pki: ClusterPKI) -> list[str]:
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            f"--cluster-signing-cert-file={pki.ca.cert}",
            f"--cluster-signing-key-file={pki.ca.key}",
            "--cluster-name=soundmind-local",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--profiling=false",
        ]

    def _scheduler_args(self) -> list[str]:
        kubeconfig = self.workdir / "scheduler.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--secure-port=0",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _kwok_args(self) -> list[str]:
        return [
            f"--kubeconfig={self.workdir / 'kwok.kubeconfig'}",
            f"--config={self.workdir / 'kwok.yaml'}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-label-selector={sim.MANAGED_NODE_LABEL}=true",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}",
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

    def _get(self, path: str, raw: bool = False):
        """The decoded object (or raw body) at ``path``; None for 404 or while unreachable."""
        try:
            status, body = self._request("GET", path)
        except OSError:
            return None
        if status != 200:
            return None
        return body if raw else json.loads(body)

    def _create_nodes(self, count: int, shape: sim.NodeShape) -> None:
        for index in range(count):
            manifest = sim.node_manifest(index, shape)
            status, body = self._request("POST", "/api/v1/nodes", manifest)
            if status not in (201, 409):
                raise ClusterError(f"creating node {manifest['metadata']['name']}: HTTP {status}: {body[:500]!r}")

    def _nodes_ready(self, count: int) -> bool:
        nodes = self._get(f"/api/v1/nodes?labelSelector={sim.MANAGED_NODE_LABEL}%3Dtrue")
        if not nodes:
            return False
        ready = [
            n
            for n in nodes["items"]
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        ]
        return len(ready) >= count

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://{_LOOPBACK}:{port}/health", timeout=2) as response:
                return json.loads(response.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

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


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux to kill it when the process that started it exits."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _remove_dead_cluster_dirs() -> None:
    """Remove the directories of clusters whose processes are all gone (failed starts, killed owners)."""
    for state in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*/{_DIR_STATE}"):
        cluster = LocalCluster.from_state(state)
        if cluster and not any(not c.exited() and _pid_started_in(c.pid, cluster.workdir) for c in cluster.components):
            shutil.rmtree(cluster.workdir, ignore_errors=True)


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
        cluster = LocalCluster.start(args.bin_dir, nodes=args.nodes, node_shape=shape, detach=True, log=_stderr)
    except ClusterError as error:
        _stderr(f"error: {error}")
        return 1
    cluster.save_state(args.state)
    print(cluster.kubeconfig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
