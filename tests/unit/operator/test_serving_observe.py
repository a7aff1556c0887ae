"""A serving's status, conditions and events decided from what the cluster shows (no cluster)."""

from datetime import UTC, datetime

import pytest

from soundmind.api.serving import ServingSpec
from soundmind_operator import references
from soundmind_operator.serving import builders
from soundmind_operator.serving.observe import Observation, TrainingView, decide

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KEDA = builders.Platform(keda=True)


def spec(**wire) -> ServingSpec:
    return ServingSpec.model_validate({"model": "Qwen/Qwen2.5-Omni-7B", **wire})


def deployment(replicas=2, ready=0, updated=None, generation=1, observed=1, progressing=None) -> dict:
    conditions = [progressing] if progressing else []
    return {
        "metadata": {"name": "s", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "observedGeneration": observed,
            "conditions": conditions,
        },
    }


def observe_(serving=None, status=None, **seen) -> Observation:
    return Observation(
        name="s",
        namespace="ns",
        generation=1,
        spec=serving or spec(),
        status=status or {},
        now=NOW,
        platform=seen.pop("platform", KEDA),
        **seen,
    )


def cond(decision, kind) -> dict:
    return next(c for c in decision.status["conditions"] if c["type"] == kind)


def test_new_serving_applies_its_children_and_says_where_it_will_answer():
    decision = decide(observe_())
    assert decision.model == builders.ModelSource("Qwen/Qwen2.5-Omni-7B")
    status = decision.status
    assert status["phase"] == "Progressing"
    assert status["url"] == "http://s.ns.svc:8000"
    assert status["selector"] == (
        "app.kubernetes.io/instance=s,app.kubernetes.io/component=server,app.kubernetes.io/managed-by=soundmind-operator"
    )
    assert status["model"] == "Qwen/Qwen2.5-Omni-7B" and status["autoscaler"] == "KEDA"
    assert cond(decision, "ModelReady")["status"] == "True"
    assert cond(decision, "ConfigError")["status"] == "False"
    assert cond(decision, "ScalingActive")["reason"] == "KEDA"


def test_all_replicas_ready_is_available():
    decision = decide(observe_(deployment=deployment(replicas=2, ready=2)))
    assert decision.status["phase"] == "Available"
    assert decision.status["readyReplicas"] == 2 and decision.status["replicas"] == 2
    assert cond(decision, "Available")["status"] == "True"
    assert cond(decision, "Progressing")["reason"] == "RolloutComplete"


def test_a_rollout_in_progress_keeps_serving_and_says_so():
    rolling = deployment(replicas=2, ready=2, updated=1, generation=2, observed=2)
    decision = decide(observe_(deployment=rolling))
    assert decision.status["phase"] == "Progressing"
    assert cond(decision, "Available")["status"] == "True"
    assert cond(decision, "Progressing")["status"] == "True"


def test_a_crash_looping_replica_is_degraded_with_the_pods_reason():
    crashing = {
        "metadata": {"name": "s-abc-1"},
        "status": {
            "containerStatuses": [
                {"name": "vllm", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]
        },
    }
    decision = decide(observe_(deployment=deployment(replicas=2, ready=1), pods=[crashing]))
    assert decision.status["phase"] == "Degraded"
    assert "s-abc-1 CrashLoopBackOff after 4 restart(s)" in cond(decision, "Progressing")["message"]
    assert any(e.type == "Warning" and e.reason == "Degraded" for e in decision.events)


def test_progress_deadline_with_nothing_ready_is_failed():
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}
    decision = decide(observe_(deployment=deployment(replicas=1, ready=0, progressing=stuck)))
    assert decision.status["phase"] == "Failed"


def test_config_error_creates_nothing_and_names_the_argument():
    decision = decide(observe_(config_error="vllm.extraArgs[0]: unknown flag --max-modle-len"))
    assert decision.model is None
    assert decision.status["phase"] == "Failed"
    error = cond(decision, "ConfigError")
    assert error["status"] == "True" and "--max-modle-len" in error["message"]
    assert cond(decision, "Available")["status"] == "False"


@pytest.mark.parametrize(
    ("training", "reason", "phase"),
    [
        (None, "TrainingNotFound", "Pending"),
        (TrainingView("Running", None, None, "ckpt"), "TrainingNotFinished", "Pending"),
        (TrainingView("Succeeded", None, None, "ckpt"), "TrainingNotFinished", "Pending"),
        (TrainingView("Failed", None, None, "ckpt"), "TrainingFailed", "Failed"),
    ],
)
def test_from_training_waits_for_an_exported_model(training, reason, phase):
    serving = ServingSpec.model_validate({"fromTraining": {"name": "alr"}})
    decision = decide(observe_(serving, training=training))
    assert decision.model is None
    ready = cond(decision, "ModelReady")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert "alr" in ready["message"]
    assert decision.status["phase"] == phase


def test_from_a_succeeded_training_serves_its_export_from_its_volume():
    serving = ServingSpec.model_validate({"fromTraining": {"name": "alr"}})
    training = TrainingView("Succeeded", "/checkpoints/alr/export/global_step_40", 40, "ckpt")
    decision = decide(observe_(serving, training=training))
    assert decision.model == builders.ModelSource("/checkpoints/alr/export/global_step_40", "ckpt")
    assert cond(decision, "ModelReady")["reason"] == "TrainingExported"
    assert "step 40" in cond(decision, "ModelReady")["message"]
    assert decision.status["model"] == "/checkpoints/alr/export/global_step_40"


def test_scaling_path_is_shown_and_an_inactive_hpa_is_reported():
    off = decide(observe_(spec(autoscaling={"enabled": False}, replicas=3)))
    assert cond(off, "ScalingActive")["status"] == "False" and off.status["autoscaler"] == "None"
    hpa = decide(observe_(platform=builders.Platform()))
    assert (
        cond(hpa, "ScalingActive")["reason"] == "HPA"
        and "vllm_num_requests_waiting" in cond(hpa, "ScalingActive")["message"]
    )
    failing = {
        "metadata": {"name": "keda-hpa-s"},
        "status": {
            "conditions": [
                {"type": "ScalingActive", "status": "False", "reason": "FailedGetExternalMetric", "message": "no data"}
            ]
        },
    }
    inactive = decide(observe_(hpa=failing))
    active = cond(inactive, "ScalingActive")
    assert (
        active["status"] == "False" and active["reason"] == "FailedGetExternalMetric" and "no data" in active["message"]
    )


def test_replica_changes_are_events():
    before = {"replicas": 1, "phase": "Available"}
    decision = decide(observe_(status=before, deployment=deployment(replicas=3, ready=1)))
    assert any(e.reason == "Scaled" and "1 → 3" in e.message for e in decision.events)


def test_deciding_again_over_the_same_cluster_changes_nothing():
    seen = deployment(replicas=2, ready=2)
    first = decide(observe_(deployment=seen))
    again = decide(observe_(status=first.status, deployment=seen))
    assert again.status_patch(first.status) == {} and again.events == []


def test_a_refused_change_leaves_the_previous_version_serving_degraded():
    serving = decide(observe_(config_error="vllm.extraArgs[0]: bad", deployment=deployment(replicas=1, ready=1)))
    assert serving.model is None, "the refused version is not applied"
    assert serving.status["phase"] == "Degraded"
    assert cond(serving, "Available")["status"] == "True" and cond(serving, "ConfigError")["status"] == "True"


# -- what blocks the replicas: the scheduler, the references, a container that cannot start --------

NODES = (references.node_view({"metadata": {"name": "sim-gpu-0"}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}}),)
NO_CLAIM = 'persistentvolumeclaim "models" not found'


def unplaced_pod(index: int, message: str) -> dict:
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {
        "metadata": {"name": f"s-abc-{index}"},
        "spec": {},
        "status": {"phase": "Pending", "conditions": [scheduled]},
    }


def waiting_pod(reason: str, message: str) -> dict:
    waiting = {"reason": reason, "message": message}
    return {
        "metadata": {"name": "s-abc-1"},
        "spec": {"nodeName": "real"},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "vllm", "state": {"waiting": waiting}}]},
    }


def test_replicas_the_scheduler_cannot_place_for_a_missing_claim_are_pending_and_say_why():
    pods = [unplaced_pod(1, NO_CLAIM), unplaced_pod(2, NO_CLAIM)]
    seen = references.Seen(claims={}, nodes=NODES)
    decision = decide(observe_(deployment=deployment(replicas=2), pods=pods, seen=seen))
    assert decision.status["phase"] == "Pending"
    schedulable = cond(decision, "Schedulable")
    assert (schedulable["status"], schedulable["reason"]) == ("False", "ClaimNotFound")
    assert schedulable["message"] == (
        '2/2 replicas cannot be placed: spec.storage.models.claimName: PersistentVolumeClaim "models" not found '
        f"in ns; {NO_CLAIM} (2 pods)"
    )
    resolved = cond(decision, "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "ClaimNotFound")
    assert resolved["message"] == 'spec.storage.models.claimName: PersistentVolumeClaim "models" not found in ns'
    progressing = cond(decision, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ClaimNotFound")
    warnings = {(e.reason, e.message) for e in decision.events if e.type == "Warning"}
    assert ("ClaimNotFound", f"Schedulable=False: {schedulable['message']}") in warnings
    assert ("ClaimNotFound", f"ResolvedRefs=False: {resolved['message']}") in warnings


def test_a_gpu_resource_no_node_offers_is_named_beside_the_schedulers_words():
    insufficient = "0/3 nodes are available: 3 Insufficient amd.com/gpu. preemption: 0/3 nodes are available."
    serving = spec(resources={"gpuResource": "amd.com/gpu"}, autoscaling={"enabled": False})
    seen = references.Seen(claims={"models": references.ClaimView("Bound")}, nodes=NODES)
    decision = decide(
        observe_(serving, deployment=deployment(replicas=1), pods=[unplaced_pod(1, insufficient)], seen=seen)
    )
    schedulable = cond(decision, "Schedulable")
    assert (schedulable["status"], schedulable["reason"]) == ("False", "NoMatchingNode")
    assert schedulable["message"] == (
        f"1/1 replicas cannot be placed: spec.resources.gpuResource: no node offers amd.com/gpu; {insufficient}"
    )
    resolved = cond(decision, "ResolvedRefs")
    assert resolved["reason"] == "NoMatchingNode"
    assert resolved["message"] == "spec.resources.gpuResource: no node offers amd.com/gpu"
    assert decision.status["phase"] == "Pending"


def test_unplaced_replicas_beside_ready_ones_are_degraded_with_the_schedulers_reason():
    busy = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    decision = decide(observe_(deployment=deployment(replicas=3, ready=2), pods=[unplaced_pod(3, busy)]))
    assert decision.status["phase"] == "Degraded"
    schedulable = cond(decision, "Schedulable")
    assert (schedulable["status"], schedulable["reason"], schedulable["message"]) == (
        "False",
        "Unschedulable",
        f"1/3 replicas cannot be placed: {busy}",
    )
    assert any(e.type == "Warning" and e.reason == "Degraded" for e in decision.events)


def test_placed_replicas_are_schedulable_and_only_a_recovery_is_an_event():
    placed = {"metadata": {"name": "s-abc-1"}, "spec": {"nodeName": "sim-gpu-0"}, "status": {"phase": "Running"}}
    first = decide(observe_(deployment=deployment(replicas=1, ready=1), pods=[placed]))
    assert (cond(first, "Schedulable")["status"], cond(first, "Schedulable")["reason"]) == ("True", "Scheduled")
    assert not [e for e in first.events if "Schedulable" in e.message]
    stuck = decide(observe_(deployment=deployment(replicas=1), pods=[unplaced_pod(1, "0/2 nodes")]))
    recovered = decide(observe_(status=stuck.status, deployment=deployment(replicas=1, ready=1), pods=[placed]))
    assert [e.message for e in recovered.events if e.reason == "Scheduled"] == [
        "Schedulable=True: 1/1 replica pods placed"
    ]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("CreateContainerConfigError", 'secret "hf-token" not found'),
        ("ErrImagePull", 'failed to pull and unpack image "registry.invalid/vllm:1": not found'),
        ("ImagePullBackOff", 'Back-off pulling image "registry.invalid/vllm:1"'),
    ],
)
def test_a_container_that_cannot_start_gives_its_reason_and_the_pods_message(reason, message):
    decision = decide(observe_(deployment=deployment(replicas=1), pods=[waiting_pod(reason, message)]))
    progressing = cond(decision, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", reason)
    assert progressing["message"] == f"pod s-abc-1 {reason}: {message}"
    assert decision.status["phase"] == "Degraded"
    assert any(e.type == "Warning" and message in e.message for e in decision.events)
