"""Running soundmind-operator against a test cluster exactly as it is installed: the generated CRDs,
the committed RBAC (config/rbac/), and the operator's own ServiceAccount identity, so a permission
missing from the manifests fails the tests instead of production.

The operator runs as a subprocess of the `soundmind-operator` command line with a kubeconfig
holding a bound token of its ServiceAccount (TokenRequest API): the API server sees
`system:serviceaccount:soundmind-system:soundmind-operator` and nothing more.

Command line (used by hack/demo.sh):
``python -m tests.support.operator kubeconfig --admin ADMIN --out PATH`` installs the CRDs and RBAC
and writes the ServiceAccount's kubeconfig.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from tests.support.kube import Kube, exists, read_or_none
from tests.support.poll import wait_for
from tests.support.third_party_crds import KubeYamlLoader

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "charts" / "soundmind-crds" / "templates"
RBAC_DIR = ROOT / "config" / "rbac"
OPERATOR_NAMESPACE = "soundmind-system"
OPERATOR_SERVICE_ACCOUNT = "soundmind-operator"
TOKEN_SECONDS = 2 * 3600
DEFAULT_CLAIMS = ("soundmind-checkpoints", "alr-data", "models")  # TrainingSpec's storage defaults


def install_crds(kube: Kube, directory: Path = CRD_DIR) -> list[str]:
    """Apply every CRD in ``directory`` and wait until the API server serves them."""
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    names = [
        doc["metadata"]["name"]
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.load_all(path.read_text(), Loader=KubeYamlLoader)
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    for name in names:
        kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    return names


def install_rbac(kube: Kube) -> None:
    try:
        kube.core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=OPERATOR_NAMESPACE)))
    except ApiException as error:
        if error.status != 409:
            raise
    for name in ("service_account.yaml", "cluster_role.yaml", "cluster_role_binding.yaml"):
        kube.kubectl("apply", "-f", str(RBAC_DIR / name))


def service_account_kubeconfig(
    kube: Kube, out: Path, namespace: str = OPERATOR_NAMESPACE, name: str = OPERATOR_SERVICE_ACCOUNT
) -> Path:
    """A kubeconfig for a ServiceAccount (same server and CA as ``kube``), from a bound token."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=TOKEN_SECONDS)
    )
    token = kube.core_v1.create_namespaced_service_account_token(name, namespace, request).status.token
    admin = yaml.safe_load(kube.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    user = f"system:serviceaccount:{namespace}:{name}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": name,
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


def create_volumes(kube: Kube, namespace: str, claims: tuple[str, ...] = DEFAULT_CLAIMS) -> None:
    """PersistentVolumeClaims a training mounts, each bound to its own PersistentVolume: the local
    cluster has no provisioner, and the scheduler places no pod whose claims are unbound. The
    volumes are named after the namespace; `delete_volumes` removes them (they are not namespaced)."""
    for claim in claims:
        volume = f"{namespace}-{claim}"
        # never mounted: kwok runs no containers
        bind_claim(kube, namespace, claim, {"hostPath": {"path": f"/tmp/{volume}"}}, "ReadWriteMany", "1Ti")

    def bound() -> bool:
        claims_now = kube.core_v1.list_namespaced_persistent_volume_claim(namespace).items
        return len(claims_now) >= len(claims) and all(c.status.phase == "Bound" for c in claims_now)

    wait_for(bound, timeout=30, what=f"claims {', '.join(claims)} Bound in {namespace}")


def with_volumes(kube: Kube, namespace: str) -> Iterator[str]:
    """The volumes in ``namespace`` while it is used; afterwards its custom resources and their
    children deleted, then the volumes."""
    create_volumes(kube, namespace)
    yield namespace
    # Delete the custom resources first and let the garbage collector take their Jobs, Deployments
    # and pods, so the volumes below are no longer in use when they are deleted.
    for kind in (TRAINING, SERVING):
        kube.custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)
    wait_for(
        lambda: (
            not kube.batch_v1.list_namespaced_job(namespace).items
            and not kube.apps_v1.list_namespaced_deployment(namespace).items
        ),
        timeout=60,
        what=f"Jobs and Deployments of {namespace} garbage-collected",
    )
    delete_volumes(kube, namespace)


def bind_claim(
    kube: Kube, namespace: str, claim: str, source: dict, access_mode: str, size: str, reclaim: str = "Delete"
) -> str:
    """Claim ``claim`` in ``namespace`` pre-bound to a PersistentVolume ``<namespace>-<claim>`` of
    ``source`` (its volume-source fields, e.g. ``{"hostPath": ...}`` or ``{"local": ..., "nodeAffinity":
    ...}``); returns the volume's name."""
    volume = f"{namespace}-{claim}"
    kube.core_v1.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {"soundmind.ai/test-namespace": namespace}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": [access_mode],
                **source,
                "claimRef": {"namespace": namespace, "name": claim},
                "persistentVolumeReclaimPolicy": reclaim,
            },
        }
    )
    kube.core_v1.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": [access_mode],
                "resources": {"requests": {"storage": size}},
                "volumeName": volume,
                "storageClassName": "",
            },
        },
    )
    return volume


def delete_volumes(kube: Kube, namespace: str) -> None:
    kube.core_v1.delete_collection_persistent_volume(label_selector=f"soundmind.ai/test-namespace={namespace}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`soundmind-operator --all-namespaces` in a subprocess; logs go to ``log_path``."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        resync_seconds: float = 1.0,
        prometheus_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        source: Path = ROOT,
    ):
        self.kubeconfig = kubeconfig
        self.source = source  # the checkout whose operator runs (an older commit's, for upgrades)
        self.extra_args = extra_args  # e.g. ("--peering=NAME", "--priority=2")
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.prometheus_url = prometheus_url  # where KEDA is told to query (--prometheus-url); None: the default
        self.metrics_port = _free_port()
        self.liveness_port = _free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> OperatorProcess:
        # The source checkout's packages, whichever checkout the environment's editable install points at.
        sources = [str(self.source), str(self.source / "operator"), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(sources),
        }
        command = [
            sys.executable,
            "-m",
            "soundmind_operator.main",
            "--all-namespaces",
            f"--resync-seconds={self.resync_seconds}",
            f"--metrics-port={self.metrics_port}",
            f"--liveness-port={self.liveness_port}",
            *self.extra_args,
        ]
        if self.prometheus_url:
            command.append(f"--prometheus-url={self.prometheus_url}")
        log = self.log_path.open("a")
        log.write(f"\n=== start {' '.join(command)}\n")
        log.flush()
        self.process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.source, start_new_session=True
        )
        log.close()
        wait_for(self.healthy, timeout=timeout, interval=0.2, what=f"operator liveness (log: {self.log_path})")
        return self

    def healthy(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"operator exited ({self.process and self.process.returncode}):\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """End the operator (SIGKILL: as a crash would); its process group only."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_installed(kube: Kube, workdir: Path, *, resync_seconds: float = 1.0) -> OperatorProcess:
    """Install the CRDs and RBAC on ``kube`` and start the operator there as its ServiceAccount."""
    install_crds(kube)
    install_rbac(kube)
    kubeconfig = wait_for(
        lambda: read_or_none(lambda: service_account_kubeconfig(kube, workdir / "operator.kubeconfig")),
        timeout=30,
        what="a token for the operator's ServiceAccount",
    )
    return OperatorProcess(kubeconfig, workdir / "operator.log", resync_seconds=resync_seconds).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    kubeconfig = sub.add_parser("kubeconfig", help="install CRDs and RBAC, write the operator's kubeconfig")
    kubeconfig.add_argument("--admin", type=Path, required=True, help="an admin kubeconfig of the cluster")
    kubeconfig.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    kube = Kube.connect(args.admin)
    install_crds(kube)
    install_rbac(kube)
    wait_for(
        lambda: exists(
            lambda: kube.core_v1.read_namespaced_service_account(OPERATOR_SERVICE_ACCOUNT, OPERATOR_NAMESPACE)
        ),
        timeout=30,
        what="the operator's ServiceAccount",
    )
    print(service_account_kubeconfig(kube, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
