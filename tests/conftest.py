"""Fixtures shared by all tests.

``kube`` (session): a cluster and its API clients (:class:`tests.support.kube.Kube`). By default
``local_cluster``: a fresh local control plane with simulated GPU nodes and a real node
(tests/support/localcluster.py, tests/support/realnode.py), started on first use so unit tests never
pay for it, and stopped at the end of the session. With ``SOUNDMIND_TEST_KUBECONFIG`` set, that
cluster is used instead (a kind cluster in CI, say): unless a kwok already keeps simulated nodes
Ready there, the session runs kwok here against it, creates the simulated nodes, and at the end
stops kwok and deletes the nodes it created.

``local_cluster`` (session): that local cluster (:class:`tests.support.localcluster.LocalCluster`).
Its ``real_node`` runs pods for real: select it with ``{realnode.REAL_NODE_LABEL: "true"}``, run
``realnode.BUSYBOX_IMAGE`` or images loaded with ``local_cluster.import_images([archive, ...])``,
with ``imagePullPolicy: Never``.

``namespace`` (per test): a new namespace, deleted after the test.

The tools' fixtures (``cluster_bin_dir``, ``keda_bin_dir``, ``cosign``...) ask hack/tools.sh for
their tools: it builds one that is missing, or waits while another caller builds it (`make test`
builds the slow tools of its `later` group beside the tests, and the modules that need them run last:
tests/integration/conftest.py). A build that fails fails the test.

With ``CI=true`` a cluster that does not start fails the run, and so does a real node that cannot
start (it needs root); elsewhere, without root, the local cluster starts without its real node.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support import sim
from tests.support.kube import Kube, exists
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parent.parent

# This checkout's packages, whatever checkout the shared environment's editable install points at
# (hack/venv.sh re-points it at the last caller): for this process and every subprocess it starts
# (the operator, the `soundmind` command, python -m ...).
_SOURCES = [str(ROOT), str(ROOT / "operator")]
sys.path[:0] = [p for p in _SOURCES if p not in sys.path]
os.environ["PYTHONPATH"] = os.pathsep.join([*_SOURCES, *filter(None, [os.environ.get("PYTHONPATH")])])
EXTERNAL_KUBECONFIG_ENV = "SOUNDMIND_TEST_KUBECONFIG"
# Job successPolicy (GA in v1.33) and podFailurePolicy, which the operator's Jobs rely on.
MIN_SERVER_VERSION = (1, 33)

_cluster_report: list[str] = []
_figures: list[str] = []

# The GPU images' in-image checks build and load the trainer and server images (an hour and tens of GB
# cold): `make test-gpu-images` runs them by path; `pytest tests` (make test) leaves them out.
collect_ignore = ["gpu_images"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def _cluster_binaries(names: tuple[str, ...]) -> Path:
    """The directory of the tools ``names`` at this checkout's versions: hack/tools.sh links each,
    building it first if it is missing, or waiting for the caller that is building it."""
    from tests.support import localcluster

    missing = localcluster.missing_binaries(localcluster.default_bin_dir(), names)
    if missing:
        print(f"\nhack/tools.sh: waiting for {', '.join(missing)} to be built", file=sys.stderr)
    built = subprocess.run([str(ROOT / "hack" / "tools.sh"), *names], stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        pytest.fail(
            f"hack/tools.sh {' '.join(names)} failed (exit {built.returncode}); see its output above", pytrace=False
        )
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def cluster_bin_dir() -> Path:
    """The directory of all the local cluster's binaries."""
    from tests.support import localcluster, realnode

    return _cluster_binaries(localcluster.BINARIES + realnode.BINARIES)


@pytest.fixture(scope="session")
def keda_bin_dir() -> Path:
    """The directory of KEDA's operator and metrics adapter."""
    from tests.support.keda import BINARIES

    return _cluster_binaries(BINARIES)


@pytest.fixture(scope="session")
def registry_bin_dir() -> Path:
    """The directory of the distribution registry (tests/support/registry.py)."""
    from tests.support.registry import BINARY

    return _cluster_binaries((BINARY,))


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """actionlint, the workflows' linter."""
    return _cluster_binaries(("actionlint",)) / "actionlint"


@pytest.fixture(scope="session")
def cosign() -> Path:
    """cosign, which signs and verifies the pushed images."""
    return _cluster_binaries(("cosign",)) / "cosign"


@pytest.fixture(scope="session")
def release_tools() -> Path:
    """The directory of the tools hack/release.py runs (helm, cosign, syft)."""
    from hack import release

    return _cluster_binaries(release.TOOLS)


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[Kube]:
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        yield from _external_cluster(external)
        return
    from tests.support import localcluster

    cluster = request.getfixturevalue("local_cluster")
    kube = Kube.connect(cluster.kubeconfig, kubectl=localcluster.default_bin_dir() / "kubectl")
    yield kube
    kube.api_client.close()


@pytest.fixture(scope="session")
def local_cluster(cluster_bin_dir: Path):
    """This session's local cluster: the one ``kube`` talks to, unless SOUNDMIND_TEST_KUBECONFIG names
    another (then only the tests that ask for it, the real node's, start it). Its real node needs
    root: in CI it must start; elsewhere, without root, the cluster starts without one."""
    # Imported here so that unit-only runs need none of the cluster's dependencies.
    from tests.support import localcluster

    real_node = _in_ci() or os.geteuid() == 0
    began = time.monotonic()
    try:
        cluster = localcluster.LocalCluster.start(cluster_bin_dir, real_node=real_node)
    except localcluster.ClusterError as error:
        pytest.fail(f"the local cluster did not start: {error}", pytrace=False)
    node = "with its real node" if real_node else "without a real node (not root)"
    _cluster_report.append(
        f"local cluster {node}: all nodes Ready {time.monotonic() - began:.1f}s after start ({cluster.workdir})"
    )
    try:
        yield cluster
    finally:
        cluster.stop()


def _external_cluster(setting: str) -> Iterator[Kube]:
    """The cluster of ``SOUNDMIND_TEST_KUBECONFIG``, with simulated GPU nodes kept Ready by kwok:
    one already running there, or one started here for the session (stopped at its end, with the
    nodes it created deleted). Any problem fails the session, in CI or not: the variable asked for
    that cluster."""
    from tests.support import localcluster

    where = f"{EXTERNAL_KUBECONFIG_ENV}={setting}"
    path = Path(setting).expanduser().resolve()
    if not path.is_file():
        pytest.fail(f"{where}: no kubeconfig file at {path}", pytrace=False)
    try:
        kube = Kube.connect(path, kubectl=localcluster.default_bin_dir() / "kubectl")
    except Exception as error:  # noqa: BLE001 - a kubeconfig the client cannot use, for whatever reason
        pytest.fail(f"{where}: not a usable kubeconfig: {error}", pytrace=False)
    try:
        server = kube.api_client.configuration.host
        try:
            version = client.VersionApi(kube.api_client).get_code(_request_timeout=10)
        except Exception as error:  # noqa: BLE001 - any failure to reach it means the same to the user
            pytest.fail(
                f"{where}: the cluster at {server} is not reachable ({type(error).__name__}: {str(error)[:300]}). "
                f"Is it running? Try `kubectl --kubeconfig {path} cluster-info`.",
                pytrace=False,
            )
        found = (int(version.major), int(re.match(r"\d*", version.minor).group() or 0))
        if found < MIN_SERVER_VERSION:
            pytest.fail(
                f"{where}: the cluster at {server} runs Kubernetes {version.git_version}; the tests need "
                f"v{'.'.join(map(str, MIN_SERVER_VERSION))} or newer (Job successPolicy and podFailurePolicy)",
                pytrace=False,
            )
        described = f"cluster: {where} ({version.git_version} at {server})"
        try:
            state = localcluster.cluster_simulation_state(kube.request)
        except localcluster.ClusterError as error:
            pytest.fail(f"{where}: {error}", pytrace=False)
        if state == localcluster.MANAGED:
            _cluster_report.append(f"{described}; its simulated nodes are kept Ready by a kwok already running")
            yield kube
            return
        if state == localcluster.PARTLY_MANAGED:
            pytest.fail(
                f"{where}: a kwok already manages nodes labelled {sim.MANAGED_NODE_LABEL}=true there, but fewer "
                f"than {sim.DEFAULT_NODE_COUNT} are Ready; stop it or delete those nodes, so that this session "
                "runs its own",
                pytrace=False,
            )
        bin_dir = _cluster_binaries(("kwok",))
        began = time.monotonic()
        try:
            simulated = localcluster.SimulatedNodes.start(bin_dir, path, kube.request)
        except localcluster.ClusterError as error:
            pytest.fail(f"{where}: kwok or the simulated nodes did not start: {error}", pytrace=False)
        _cluster_report.append(
            f"{described}; kwok started here, {len(simulated.created_nodes)} simulated node(s) created, "
            f"all Ready {time.monotonic() - began:.1f}s after start"
        )
        try:
            yield kube
        finally:
            simulated.stop()  # raises when a node could not be deleted: the cluster is not as found
            _cluster_report.append(f"{where}: kwok stopped, simulated nodes it created deleted")
    finally:
        kube.api_client.close()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"{slug or 'test'}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (labelled ``soundmind.ai/test=true``) whose default ServiceAccount exists,
    so pods can be created at once; deleted after the test."""
    yield from fresh_namespace(kube, request.node.name)


def fresh_namespace(kube: Kube, test_name: str) -> Iterator[str]:
    """The `namespace` fixture's body, for any cluster."""
    name = _namespace_name(test_name)
    kube.core_v1.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"soundmind.ai/test": "true"}))
    )

    wait_for(
        lambda: exists(lambda: kube.core_v1.read_namespaced_service_account("default", name)),
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    yield name
    # A terminating namespace admits no new pods, so after deleting it, force-deleting its pods frees
    # their GPUs for the next test at once; the namespace itself goes later (the namespace
    # controller waits 5 s before it starts).
    try:
        kube.core_v1.delete_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return
        raise
    kube.core_v1.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    wait_for(
        lambda: not kube.core_v1.list_namespaced_pod(name).items,
        timeout=30,
        what=f"pods of namespace {name} deleted",
    )


@pytest.fixture(scope="session")
def figure() -> Callable[[str], None]:
    """Records a line a test measured (a hand-over time, what an upgrade kept) for the session's
    summary, which prints it whether the test passed or failed: CI logs keep each run's figures."""

    def record(line: str) -> None:
        print(line)
        _figures.append(line)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _cluster_report:
        terminalreporter.write_line(line)
    if _figures:
        terminalreporter.section("figures measured by the tests")
        for line in _figures:
            terminalreporter.write_line(line)
