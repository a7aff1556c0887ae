"""Fixtures of the operator's integration tests: the operator itself, installed as a user would
install it (CRDs, RBAC) and running as its own ServiceAccount, one per test module; and a namespace
holding the volumes trainings and servings mount."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import operator as op
from tests.support.kube import Kube


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
