"""Whether the tests' session starts its own kwok on an external cluster (SOUNDMIND_TEST_KUBECONFIG):
the decision :func:`tests.support.localcluster.simulation_state` takes from nodes and node leases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support import sim
from tests.support.localcluster import MANAGED, PARTLY_MANAGED, UNMANAGED, simulation_state

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC).timestamp()


def node(name: str, ready: str = "True", labelled: bool = True) -> dict:
    labels = {sim.MANAGED_NODE_LABEL: "true"} if labelled else {}
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": ready}]},
    }


def lease(name: str, renewed: str = "2026-11-26T09:59:50.123456Z", duration: int = 40) -> dict:
    return {"metadata": {"name": name}, "spec": {"renewTime": renewed, "leaseDurationSeconds": duration}}


@pytest.mark.parametrize(
    ("nodes", "leases", "expected"),
    [
        pytest.param([], [], UNMANAGED, id="no simulated nodes"),
        pytest.param(
            [node("sim-gpu-0"), node("sim-gpu-1")],
            [lease("sim-gpu-0"), lease("sim-gpu-1")],
            MANAGED,
            id="ready, leases renewed 10s ago",
        ),
        pytest.param(
            [node("sim-gpu-0"), node("sim-gpu-1")],
            [lease("sim-gpu-0", "2026-11-26T09:59:00Z"), lease("sim-gpu-1", "2026-11-26T09:59:00Z")],
            UNMANAGED,
            id="leftovers: leases expired",
        ),
        pytest.param([node("sim-gpu-0"), node("sim-gpu-1")], [], UNMANAGED, id="no leases"),
        pytest.param(
            [node("sim-gpu-0", ready="Unknown"), node("sim-gpu-1", ready="Unknown")],
            [lease("sim-gpu-0"), lease("sim-gpu-1")],
            UNMANAGED,
            id="not ready",
        ),
        pytest.param(
            [node("kind-worker", labelled=False), node("kind-worker2", labelled=False)],
            [lease("kind-worker"), lease("kind-worker2")],
            UNMANAGED,
            id="real nodes do not count",
        ),
        pytest.param(
            [node("sim-gpu-0"), node("sim-gpu-1")],
            [lease("sim-gpu-0"), lease("sim-gpu-1", "2026-11-26T09:00:00Z")],
            PARTLY_MANAGED,
            id="one of two alive",
        ),
    ],
)
def test_simulation_state(nodes, leases, expected):
    assert simulation_state(nodes, leases, NOW, count=2) == expected


def test_a_lease_counts_for_its_own_duration():
    renewed = "2026-11-26T09:58:00Z"  # two minutes ago
    assert simulation_state([node("sim-gpu-0")], [lease("sim-gpu-0", renewed, 180)], NOW, 1) == MANAGED
    assert simulation_state([node("sim-gpu-0")], [lease("sim-gpu-0", renewed, 60)], NOW, 1) == UNMANAGED
