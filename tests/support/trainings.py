"""Creating, steering and reading SoundMindTrainings in integration tests, and the one-node
lifecycle that test_training_operator.py runs with the operator as a process and
test_in_cluster.py with the operator as a pod from its image."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING
from soundmind_operator import metrics
from soundmind_operator.training import names
from tests.support import operator as op
from tests.support import resources, sim
from tests.support.kube import Kube
from tests.support.poll import wait_for

IMAGE = "registry.invalid/soundmind/trainer:sim"  # never pulled: kwok runs no containers


# -- reading and steering trainings ----------------------------------------------------------------------------------


def training_manifest(name: str, **spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SoundMindTraining",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, **spec},
    }


def create_training(kube: Kube, ns: str, name: str, **spec) -> dict:
    return kube.custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, TRAINING.plural, training_manifest(name, **spec)
    )


def get_training(kube: Kube, ns: str, name: str) -> dict:
    return resources.get(kube, TRAINING, ns, name)


def patch_spec(kube: Kube, ns: str, name: str, **fields) -> None:
    kube.custom_objects.patch_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, name, {"spec": fields})


condition = resources.condition


def wait_training(kube: Kube, ns: str, name: str, predicate, what: str, timeout: float = 30) -> dict:
    return resources.wait(kube, TRAINING, ns, name, predicate, what, timeout)


def phase_is(phase: str):
    return lambda t: (t.get("status") or {}).get("phase") == phase


def failed_with(reason: str):
    return lambda t: phase_is("Failed")(t) and condition(t, "Failed").get("reason") == reason


def jobs(kube: Kube, ns: str, name: str) -> list:
    return kube.batch_v1.list_namespaced_job(ns, label_selector=names.selector(name)).items


def running_pods(kube: Kube, ns: str, job_name: str, count: int, timeout: float = 30) -> list:
    def check():
        pods = kube.core_v1.list_namespaced_pod(ns, label_selector=f"{names.JOB_NAME_LABEL}={job_name}").items
        running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        return (running,) if len(running) == count else None  # a tuple: truthy even when none should run

    return wait_for(check, timeout=timeout, what=f"{count} running pod(s) of Job {ns}/{job_name}")[0]


def end_pod(kube: Kube, ns: str, pod, exit_code: int, message: str = "") -> None:
    """The trainer in this pod exits with ``exit_code`` (kwok's failure stage)."""
    annotations = {sim.EXIT_CODE: str(exit_code)}
    if message:
        annotations[sim.EXIT_MESSAGE] = message
    kube.core_v1.patch_namespaced_pod(pod.metadata.name, ns, {"metadata": {"annotations": annotations}})


def driver(pods: list):
    return next(p for p in pods if p.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0")


def events_of(kube: Kube, ns: str, name: str) -> list:
    selector = f"involvedObject.kind=SoundMindTraining,involvedObject.name={name}"
    return kube.core_v1.list_namespaced_event(ns, field_selector=selector).items


def seconds_since_creation(training: dict, condition_type: str) -> float:
    created = datetime.fromisoformat(training["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    moved = datetime.fromisoformat(condition(training, condition_type)["lastTransitionTime"].replace("Z", "+00:00"))
    return (moved - created).total_seconds()


def one_node_training_lifecycle(kube: Kube, ns: str, tmp_path: Path, operator_metrics: Callable[[], str]) -> None:
    """Create, Running, Stalled, progress from the trainer's own ServiceAccount, Succeeded, with an
    event for each transition and the operator's metrics (``operator_metrics``: its /metrics text).
    Run by test_training_operator.py (the operator as a process) and test_in_cluster.py (as a pod)."""
    # Whole-second timestamps and a loaded machine eat ~2 s of the window in which progress reads
    # as fresh; 6 s leaves room to see Stalled clear before it could fire again.
    create_training(kube, ns, "alr", stallTimeoutSeconds=6)
    running = wait_training(kube, ns, "alr", phase_is("Running"), "Running")
    print(f"apply -> Running: {seconds_since_creation(running, 'Running'):.1f}s")

    kube.core_v1.read_namespaced_config_map(names.config_map("alr"), ns)
    kube.rbac_v1.read_namespaced_role(names.role("alr"), ns)
    kube.rbac_v1.read_namespaced_role_binding(names.role_binding("alr"), ns)
    (job,) = jobs(kube, ns, "alr")
    assert job.metadata.name == "alr-a1" and job.metadata.owner_references[0].name == "alr"
    (pod,) = running_pods(kube, ns, "alr-a1", 1)
    assert pod.spec.containers[0].resources.requests[sim.GPU_RESOURCE] == "8"
    shm = next(v for v in pod.spec.volumes if v.name == "shm")
    assert (shm.empty_dir.medium, shm.empty_dir.size_limit) == ("Memory", "64Gi")
    assert kube.core_v1.read_node(pod.spec.node_name).metadata.labels[sim.GPU_PRESENT_LABEL] == "true"
    status = running["status"]
    assert status["attempt"] == 1 and status["jobName"] == "alr-a1" and status["startTime"]
    assert condition(running, "Schedulable")["status"] == "True"

    # No progress reported within stallTimeoutSeconds: Stalled.
    stalled = wait_training(kube, ns, "alr", lambda t: condition(t, "Stalled").get("status") == "True", "Stalled")
    assert condition(stalled, "Stalled")["reason"] == "NoProgress"

    # The trainer reports progress with its own ServiceAccount (the operator-made Role allows exactly this).
    trainer_kubeconfig = op.service_account_kubeconfig(kube, tmp_path / "trainer", ns, names.service_account("alr"))
    trainer_api = client.CustomObjectsApi(config.new_client_from_config(str(trainer_kubeconfig)))
    progress = {"step": 5, "totalSteps": 1620, "rewardMean": 1.75, "valAccuracy": 0.62}
    progress["updatedAt"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    trainer_api.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, TRAINING.plural, "alr", {"status": {"progress": progress}}
    )
    with pytest.raises(ApiException) as refused:  # ... and nothing else
        trainer_api.patch_namespaced_custom_object(
            GROUP, VERSION, ns, TRAINING.plural, "alr", {"spec": {"suspend": True}}
        )
    assert refused.value.status == 403
    wait_training(kube, ns, "alr", lambda t: condition(t, "Stalled").get("status") == "False", "no longer Stalled")

    table = kube.kubectl("get", "smt", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STEP", "REWARD", "VAL-ACC", "AGE"]
    assert table[1].split()[:5] == ["alr", "Running", "5", "1.75", "0.62"]

    end_pod(kube, ns, pod, 0)
    done = wait_training(kube, ns, "alr", phase_is("Succeeded"), "Succeeded")
    assert done["status"]["completionTime"] and condition(done, "Complete")["status"] == "True"
    assert done["status"]["progress"]["step"] == 5, "the operator must never overwrite the trainer's progress"
    assert done["status"]["gpuSeconds"] > 0
    wait_for(
        lambda: {"JobCreated", "Running", "NoProgress", "Succeeded"} <= {e.reason for e in events_of(kube, ns, "alr")},
        what="an event for every transition",
    )

    exported = operator_metrics()
    for name in (metrics.RECONCILE_TOTAL, metrics.RECONCILE_DURATION, metrics.TRAINING_GPU_SECONDS, metrics.TRAININGS):
        assert name in exported
    assert f'{metrics.TRAININGS}{{phase="Succeeded"}}' in exported
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exported.splitlines()
        if not line.startswith("#")
    }
    passes = samples[f'{metrics.RECONCILE_DURATION}_count{{kind="SoundMindTraining",result="ok"}}']
    spent = samples[f'{metrics.RECONCILE_DURATION}_sum{{kind="SoundMindTraining",result="ok"}}']
    print(f"reconcile passes so far: {passes:.0f}, mean {1000 * spent / passes:.1f} ms")
