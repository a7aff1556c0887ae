"""Fixtures of the operator's integration tests: the operator itself, installed as a user would
install it (CRDs, RBAC) and running as its own ServiceAccount, one per test module; a namespace
holding the volumes trainings and servings mount; the local cluster and its clients for the modules
that need its real node; the node that runs our images for real, on either cluster; and a private
registry the real node pulls from.

The modules run in file order, except those that need a tool `make test` builds beside the tests
(hack/tools.sh's `later` group: the registry, cosign and syft, KEDA): they run last, in the order
that build finishes those tools, so the rest of the suite runs while they compile."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.images.build import IMAGES, build
from tests.conftest import EXTERNAL_KUBECONFIG_ENV
from tests.support import operator as op
from tests.support import realnode, sim
from tests.support.kube import Kube, serves_pod_groups
from tests.support.localcluster import LocalCluster, default_bin_dir
from tests.support.prerequisite import missing
from tests.support.registry import Registry, running_registry

# The fixtures of hack/tools.sh's `later` tools (tests/conftest.py), in the order it builds them.
LATER_TOOLS = ("registry_bin_dir", "cosign", "release_tools", "keda_bin_dir")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Moves each module that needs a `later` tool after those that need none, whole (its module
    fixtures are set up once), by the last of those tools it needs."""
    rank: dict[object, int] = {}
    for item in items:
        needs = [i for i, fixture in enumerate(LATER_TOOLS, 1) if fixture in item.fixturenames]
        rank[item.module] = max([rank.get(item.module, 0), *needs])
    items.sort(key=lambda item: rank[item.module])


@pytest.fixture(scope="module")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[op.OperatorProcess]:
    """The operator, installed as a user would (CRDs, RBAC), running as its ServiceAccount."""
    process = op.start_installed(kube, tmp_path_factory.mktemp("operator"))
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


def _image_names(node) -> set[str]:
    return {name for image in node.status.images or [] for name in image.names or []}


@pytest.fixture(scope="session")
def image_node(kube: Kube, request: pytest.FixtureRequest) -> str:
    """The name of a node of the session's cluster that runs our images for real, with the operator
    and stand-in images on it: on SOUNDMIND_TEST_KUBECONFIG's cluster, a Ready node kwok does not
    manage that holds them (`make test-kind` loads them into kind's node); on the local cluster, its
    real node, with them imported from the tarballs `make images` saves."""
    if os.environ.get(EXTERNAL_KUBECONFIG_ENV):
        wanted = {f"docker.io/library/{IMAGES[name].tag}" for name in ("operator", "standin")}
        for candidate in kube.core_v1.list_node().items:
            labels = candidate.metadata.labels or {}
            ready = any(c.type == "Ready" and c.status == "True" for c in candidate.status.conditions or [])
            if labels.get(sim.MANAGED_NODE_LABEL) != "true" and ready and wanted <= _image_names(candidate):
                return candidate.metadata.name
        pytest.fail(
            f"{EXTERNAL_KUBECONFIG_ENV}: no Ready node outside kwok's has {sorted(wanted)}; "
            "load them first (`make test-kind` does: kind load image-archive)",
            pytrace=False,
        )
    cluster = request.getfixturevalue("local_cluster")
    if cluster.real_node is None:
        missing("this session's local cluster has no real node (it needs root)")
    cluster.import_images(build(["operator", "standin"]))
    return realnode.NODE_NAME


@pytest.fixture(scope="module")
def real_node_cluster(local_cluster: LocalCluster) -> LocalCluster:
    """The session's local cluster, for a module that needs its real node (also when the rest of the
    session runs on SOUNDMIND_TEST_KUBECONFIG's cluster)."""
    if local_cluster.real_node is None:
        missing("this session's local cluster has no real node (it needs root)")
    return local_cluster


@pytest.fixture(scope="module")
def real_node_kube(real_node_cluster: LocalCluster) -> Iterator[Kube]:
    """Clients of the cluster with the real node (a module's `namespace` fixture creates its
    namespaces there when the module's `kube` is this)."""
    connected = Kube.connect(real_node_cluster.kubeconfig, kubectl=default_bin_dir() / "kubectl")
    yield connected
    connected.api_client.close()


@pytest.fixture(scope="session")
def registry(
    local_cluster: LocalCluster, registry_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A private registry (HTTPS from the cluster's CA, a password) on the host side of the real
    node's veth, which the node's containerd trusts."""
    with running_registry(local_cluster, registry_bin_dir, tmp_path_factory.mktemp("registry")) as started:
        local_cluster.real_node.trust_registry(started.host, started.ca)
        yield started
    print(f"registry log: {started.process.log}")


@pytest.fixture
def ns(kube: Kube, namespace: str, operator: op.OperatorProcess) -> Iterator[str]:
    """A namespace with the volumes trainings and servings mount, and the operator running."""
    yield from op.with_volumes(kube, namespace)


@pytest.fixture
def gang_cluster(kube: Kube) -> None:
    """A cluster that serves PodGroups, which the operator gives each training attempt there."""
    if not serves_pod_groups(kube):
        why = "this cluster does not serve scheduling.k8s.io/v1beta1 PodGroups (GenericWorkload is off)"
        missing(why)
