"""The `cluster` and `kube` of a module whose tests need the local cluster's real node: the
integration conftest's `real_node_cluster` and `real_node_kube` under the names the module's tests
and fixtures ask for. In the module: ``cluster, kube = on_real_node.fixtures()``."""

from __future__ import annotations

import pytest

from tests.support.kube import Kube
from tests.support.localcluster import LocalCluster


def fixtures():
    @pytest.fixture(scope="module", name="cluster")
    def cluster(real_node_cluster: LocalCluster) -> LocalCluster:
        return real_node_cluster

    @pytest.fixture(scope="module", name="kube")
    def kube(real_node_kube: Kube) -> Kube:
        return real_node_kube

    return cluster, kube
