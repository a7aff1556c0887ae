"""Fixtures shared by all tests.

``kube`` (session): a cluster and its API clients (:class:`tests.support.kube.Kube`). By default a
fresh local control plane with simulated GPU nodes (tests/support/localcluster.py), started on first
use so unit tests never pay for it, and stopped at the end of the session. With
``SOUNDMIND_TEST_KUBECONFIG`` set, that cluster is used instead (a kind cluster in CI, say).

``namespace`` (per test): a new namespace, deleted after the test.

With ``CI=true`` a missing binary or a cluster that does not start fails the run; elsewhere the
binaries are built on demand (hack/tools.sh).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.kube import Kube
from tests.support.poll import wait_for

ROOT = Path(__file__).resolve().parent.parent
EXTERNAL_KUBECONFIG_ENV = "SOUNDMIND_TEST_KUBECONFIG"

_cluster_report: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def _cluster_binaries() -> Path:
    from tests.support import localcluster

    bin_dir = localcluster.default_bin_dir()
    missing = localcluster.missing_binaries(bin_dir)
    if not missing:
        return bin_dir
    if _in_ci():
        pytest.fail(f"cluster binaries missing from {bin_dir}: {', '.join(missing)}; run `make tools`", pytrace=False)
    print(f"\nbuilding the cluster binaries ({', '.join(missing)}) with hack/tools.sh", file=sys.stderr)
    built = subprocess.run([str(ROOT / "hack" / "tools.sh")], stdout=subprocess.PIPE, text=True)
    if built.returncode != 0:
        pytest.fail(f"hack/tools.sh failed (exit {built.returncode}); see its output above", pytrace=False)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def kube() -> Iterator[Kube]:
    # Imported here so that unit-only runs need none of the cluster's dependencies.
    from tests.support import localcluster

    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    if external:
        kube = Kube.connect(Path(external), kubectl=localcluster.default_bin_dir() / "kubectl")
        try:
            kube.core_v1.list_namespace(limit=1)
        except Exception as error:  # noqa: BLE001 - any failure to reach it means the same to the user
            pytest.fail(f"{EXTERNAL_KUBECONFIG_ENV}={external}: cluster not reachable: {error}", pytrace=False)
        _cluster_report.append(f"cluster: {EXTERNAL_KUBECONFIG_ENV}={external}")
        yield kube
        return

    bin_dir = _cluster_binaries()
    began = time.monotonic()
    try:
        cluster = localcluster.LocalCluster.start(bin_dir)
    except localcluster.ClusterError as error:
        pytest.fail(f"the local cluster did not start: {error}", pytrace=False)
    _cluster_report.append(
        f"local cluster: all nodes Ready {time.monotonic() - began:.1f}s after start ({cluster.workdir})"
    )
    try:
        kube = Kube.connect(cluster.kubeconfig, kubectl=bin_dir / "kubectl")
        yield kube
        kube.api_client.close()
    finally:
        cluster.stop()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"{slug or 'test'}-{uuid.uuid4().hex[:6]}"


def _exists(read) -> bool:
    """Whether ``read()`` finds its object (404 means no)."""
    try:
        return bool(read())
    except ApiException as error:
        if error.status == 404:
            return False
        raise


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (labelled ``soundmind.ai/test=true``) whose default ServiceAccount exists,
    so pods can be created at once; deleted after the test."""
    name = _namespace_name(request.node.name)
    kube.core_v1.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"soundmind.ai/test": "true"}))
    )

    wait_for(
        lambda: _exists(lambda: kube.core_v1.read_namespaced_service_account("default", name)),
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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _cluster_report:
        terminalreporter.write_line(line)
