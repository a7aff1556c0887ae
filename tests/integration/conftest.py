"""Fixtures of the operator's integration tests: the operator itself, installed as a user would
install it (CRDs, RBAC) and running as its own ServiceAccount, one per test module; and a namespace
holding the volumes trainings and servings mount."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import operator as op
from tests.support.kube import Kube, serves_pod_groups
from tests.support.prerequisite import missing


@pytest.fixture(scope="module")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[op.OperatorProcess]:
    """The operator, installed as a user would (CRDs, RBAC), running as its ServiceAccount."""
    process = op.start_installed(kube, tmp_path_factory.mktemp("operator"))
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


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
