"""An operator upgrade and its rollback under live trainings and servings (a real API server, kwok's
GPU nodes): the operator of a fixed older commit, with that commit's CRDs, hands over to this
checkout's operator and CRDs, and then back. Across each hand-over no pod is replaced, no
ReplicaSet or Job is made, no attempt counter moves, and no status field is lost or set back; the
new operator has reconciled every object within 30 s of starting.

The older commit is read from this repository's history (`git archive`): a checkout without it
cannot run this test (in CI that fails it).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from soundmind_operator import metrics
from tests.support import operator as op
from tests.support import resources
from tests.support.kube import Kube
from tests.support.poll import wait_for
from tests.support.prerequisite import missing
from tests.support.trainings import create_training, phase_is, wait_training

pytestmark = pytest.mark.integration

PREVIOUS = "b4ce7c0"  # main before the pod template policy (children.plan)
SMALL = {"gpusPerNode": 1, "cpu": "4", "memory": "16Gi"}  # fits a kwok node beside the others
SERVER_IMAGE = "registry.invalid/soundmind/server:sim"  # never pulled: kwok runs no containers
RECONCILED_WITHIN = 30.0
GROWING = ("gpuSeconds", "gpuSecondsUpdatedAt")  # a running training's, rewritten every resync
PHASE_ORDER = {  # a status may move on, never back
    TRAINING.kind: ["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"],
    SERVING.kind: ["Pending", "Progressing", "Degraded", "Available", "Failed"],
}


@pytest.fixture(scope="module")
def previous_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"soundmind-{PREVIOUS}")
    archive = subprocess.run(["git", "-C", str(op.ROOT), "archive", PREVIOUS], capture_output=True)
    if archive.returncode != 0:
        missing(f"the operator of commit {PREVIOUS}: git archive says {archive.stderr.decode().strip()!r}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    return out


@pytest.fixture
def operators(kube: Kube) -> Iterator[list[op.OperatorProcess]]:
    """The test's operators, stopped after its namespace's objects are gone (they hold finalizers),
    and the current CRDs put back."""
    started: list[op.OperatorProcess] = []
    yield started
    for process in started:
        process.stop()
    op.install_crds(kube)


@pytest.fixture
def volumes(kube: Kube, namespace: str, operators) -> Iterator[str]:
    yield from op.with_volumes(kube, namespace)


def serving(kube: Kube, ns: str, name: str, **spec) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SERVING.kind,
        "metadata": {"name": name},
        "spec": {"image": SERVER_IMAGE, "model": "Qwen/Qwen2.5-Omni-7B", "resources": {"cpu": "1", "memory": "1Gi"}}
        | spec,
    }
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, body)


def statuses(kube: Kube, ns: str, kind) -> dict[str, dict]:
    found = kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, ns, kind.plural)["items"]
    return {o["metadata"]["name"]: o.get("status") or {} for o in found}


def state(kube: Kube, ns: str) -> dict:
    """What an upgrade must not disturb."""
    pods = kube.core_v1.list_namespaced_pod(ns).items
    return {
        "pods": {p.metadata.name: p.metadata.uid for p in pods if not p.metadata.deletion_timestamp},
        "restarts": sum(c.restart_count for p in pods for c in p.status.container_statuses or []),
        "replicaSets": sorted(r.metadata.name for r in kube.apps_v1.list_namespaced_replica_set(ns).items),
        "jobs": {j.metadata.name: j.metadata.uid for j in kube.batch_v1.list_namespaced_job(ns).items},
        TRAINING.kind: statuses(kube, ns, TRAINING),
        SERVING.kind: statuses(kube, ns, SERVING),
    }


def lost_or_set_back(kind: str, before: dict, after: dict) -> list[str]:
    """Status fields of `before` that `after` lost or set back (GPU-seconds and their time only grow;
    conditions may be added, and each keeps its status)."""
    found = []
    for field, value in before.items():
        now = after.get(field)
        if field in GROWING:
            ok = now is not None and now >= value
        elif field == "conditions":
            kept = {c["type"]: c["status"] for c in now or []}
            ok = all(kept.get(c["type"]) == c["status"] for c in value)
        elif field == "phase":
            order = PHASE_ORDER[kind]
            ok = now in order and order.index(now) >= order.index(value)
        else:
            ok = now == value
        if not ok:
            found.append(f"{field}: {value!r} -> {now!r}")
    return found


def assert_undisturbed(before: dict, after: dict, what: str) -> dict:
    assert after["pods"] == before["pods"], f"{what}: pods replaced"
    assert after["restarts"] == before["restarts"], f"{what}: containers restarted"
    assert after["replicaSets"] == before["replicaSets"], f"{what}: a Deployment rolled"
    assert after["jobs"] == before["jobs"], f"{what}: Jobs made or replaced"
    for kind in (TRAINING.kind, SERVING.kind):
        assert set(after[kind]) == set(before[kind])
        for name, status in before[kind].items():
            changed = lost_or_set_back(kind, status, after[kind][name])
            assert not changed, f"{what}: {kind} {name}: {changed}"
    kept = sum(len(before[kind][name]) for kind in (TRAINING.kind, SERVING.kind) for name in before[kind])
    return {
        "pods": len(before["pods"]),
        "jobs": len(before["jobs"]),
        "replicaSets": len(before["replicaSets"]),
        "status fields": kept,
    }


def reconciled(operator: op.OperatorProcess, ns: str) -> int:
    """How many objects of `ns` the operator has recorded a pass of: each has its series then."""
    per_object = (f"{metrics.TRAINING_GPUS_REQUESTED}{{", f"{metrics.SERVING_REPLICAS_DESIRED}{{")
    lines = operator.metrics().splitlines()
    return sum(1 for line in lines if line.startswith(per_object) and f'namespace="{ns}"' in line)


def hand_over(
    kube: Kube, ns: str, stopping: op.OperatorProcess, starting: op.OperatorProcess, crds: Path, objects: int
) -> float:
    """Stop one operator, install `crds`, start the other; seconds until it has reconciled them all."""
    stopping.stop()
    op.install_crds(kube, crds)
    began = time.monotonic()
    starting.start()
    wait_for(
        lambda: reconciled(starting, ns) == objects,
        timeout=RECONCILED_WITHIN,
        what=f"all {objects} objects reconciled by the new operator (log: {starting.log_path})",
    )
    return time.monotonic() - began


def test_an_upgrade_and_its_rollback_restart_nothing_and_lose_nothing(
    kube: Kube, operators: list[op.OperatorProcess], volumes: str, previous_source: Path, tmp_path: Path
):
    ns = volumes
    previous_crds = previous_source / "charts" / "soundmind-crds" / "templates"
    op.install_crds(kube, previous_crds)
    op.install_rbac(kube)
    kubeconfig = op.service_account_kubeconfig(kube, tmp_path / "operator.kubeconfig")
    previous = op.OperatorProcess(kubeconfig, tmp_path / "previous.log", source=previous_source)
    current = op.OperatorProcess(kubeconfig, tmp_path / "current.log")
    rolled_back = op.OperatorProcess(kubeconfig, tmp_path / "rolled-back.log", source=previous_source)
    operators += [previous, current, rolled_back]
    previous.start()
    create_training(kube, ns, "running", resources=SMALL)
    create_training(kube, ns, "unplaced", resources={**SMALL, "nodeSelector": {"example.com/pool": "none"}})
    create_training(kube, ns, "refused", extraArgs=["trainer.totl_epochs=3"])
    serving(kube, ns, "fixed", autoscaling={"enabled": False}, replicas=2)
    serving(kube, ns, "scaled", autoscaling={"minReplicas": 1, "maxReplicas": 3})
    wait_training(kube, ns, "running", phase_is("Running"), "Running", timeout=60)
    wait_training(kube, ns, "unplaced", phase_is("Pending"), "Pending")
    wait_training(kube, ns, "refused", phase_is("Failed"), "Failed")
    for name, replicas in (("fixed", 2), ("scaled", 1)):
        resources.wait(
            kube,
            SERVING,
            ns,
            name,
            lambda s, n=replicas: (
                (s.get("status") or {}).get("phase") == "Available" and s["status"].get("readyReplicas") == n
            ),
            f"Available with {replicas}",
            timeout=60,
        )
    before = state(kube, ns)

    took = hand_over(kube, ns, previous, current, op.CRD_DIR, objects=5)
    time.sleep(5)  # five resyncs: time for any roll or retry the new operator would wrongly start
    upgraded = state(kube, ns)
    counts = assert_undisturbed(before, upgraded, "upgrade")
    print(f"upgrade {PREVIOUS} -> this checkout: all reconciled {took:.1f} s after start; kept {counts}")

    took = hand_over(kube, ns, current, rolled_back, previous_crds, objects=5)
    time.sleep(5)
    counts = assert_undisturbed(upgraded, state(kube, ns), "rollback")
    print(f"rollback this checkout -> {PREVIOUS}: all reconciled {took:.1f} s after start; kept {counts}")
