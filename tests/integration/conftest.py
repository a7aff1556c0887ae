"""Fixtures of the operator's integration tests: the operator itself, installed as a user would
install it (CRDs, RBAC) and running as its own ServiceAccount, one per test module; and a namespace
holding the volumes trainings and servings mount."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from tests.support import operator as op
from tests.support.kube import Kube, read_or_none
from tests.support.poll import wait_for


@pytest.fixture(scope="module")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[op.OperatorProcess]:
    """The operator, installed as a user would (CRDs, RBAC), running as its ServiceAccount."""
    op.install_crds(kube)
    op.install_rbac(kube)
    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = wait_for(
        lambda: read_or_none(lambda: op.service_account_kubeconfig(kube, workdir / "operator.kubeconfig")),
        timeout=30,
        what="a token for the operator's ServiceAccount",
    )
    process = op.OperatorProcess(kubeconfig, workdir / "operator.log", resync_seconds=1.0).start()
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture
def ns(kube: Kube, namespace: str, operator: op.OperatorProcess) -> Iterator[str]:
    """A namespace with the volumes trainings and servings mount, and the operator running."""
    op.create_volumes(kube, namespace)
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
    op.delete_volumes(kube, namespace)
