"""A serving's status, conditions and events decided from what the cluster shows (no cluster)."""

from datetime import UTC, datetime

import pytest

from soundmind.api.serving import ServingSpec
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
