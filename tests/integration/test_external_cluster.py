"""The SOUNDMIND_TEST_KUBECONFIG switch on a cluster without kwok (what a kind cluster looks like to
it): a nested pytest session brings kwok and the simulated GPU nodes, and takes them away again.
The nested session is told which cluster to use, so this works whichever cluster the outer one uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXTERNAL_KUBECONFIG_ENV
from tests.support import sim
from tests.support.kube import Kube
from tests.support.localcluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]

# It starts a control plane of its own, whichever cluster the session itself runs against.
pytestmark = pytest.mark.integration

NESTED_TEST = "tests/integration/test_cluster.py::test_pod_requesting_eight_gpus_runs_on_a_simulated_gpu_node"


def test_session_on_a_cluster_without_kwok_simulates_gpu_nodes_and_removes_them(cluster_bin_dir: Path):
    cluster = LocalCluster.start(cluster_bin_dir, kwok=False, real_node=False)
    kube = Kube.connect(cluster.kubeconfig)
    try:
        nested = subprocess.run(
            [sys.executable, "-m", "pytest", NESTED_TEST, "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env={**os.environ, EXTERNAL_KUBECONFIG_ENV: str(cluster.kubeconfig)},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert nested.returncode == 0, nested.stdout + nested.stderr
        assert f"kwok started here, {sim.DEFAULT_NODE_COUNT} simulated node(s) created" in nested.stdout
        assert "kwok stopped, simulated nodes it created deleted" in nested.stdout
        assert kube.core_v1.list_node().items == [], "the nested session left nodes behind"
    finally:
        kube.api_client.close()
        cluster.stop()
