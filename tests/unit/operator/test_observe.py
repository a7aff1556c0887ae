"""Status, conditions, events and actions decided from observed Jobs and pods (no cluster)."""

from datetime import UTC, datetime, timedelta

import pytest

from soundmind.api.training import TrainingSpec
from soundmind_operator import references
from soundmind_operator.training import names, observe
from soundmind_operator.training.observe import CreateAttempt, DeleteJob, Observation, PatchJob, decide

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T = observe.format_time


def ago(seconds: float) -> str:
    return T(NOW - timedelta(seconds=seconds))


def job(attempt=1, *, conditions=(), suspend=False, created=None, ttl=None, completion_time=None) -> dict:
    created = created or ago(60)
    spec = {"suspend": suspend}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    status = {"conditions": [dict(c) for c in conditions]}
    if completion_time:
        status["completionTime"] = completion_time
    return {
        "metadata": {
            "name": names.job("alr", attempt),
            "uid": f"uid-{attempt}",
            "labels": {names.ATTEMPT_LABEL: str(attempt)},
            "creationTimestamp": created,
        },
        "spec": spec,
        "status": status,
    }


def cond(kind, status="True", reason="", message="", when=None) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": when or ago(5)}


def pod(
    index=0, *, phase="Running", started=None, node="sim-gpu-0", scheduled=True, message="", exit_code=None, said=""
):
    started = started or ago(100)
    conditions = [
        cond("PodScheduled", "True") if scheduled else cond("PodScheduled", "False", "Unschedulable", message, ago(30))
    ]
    status: dict = {"phase": phase, "conditions": conditions}
    if phase in ("Running", "Succeeded", "Failed"):
        status["startTime"] = started
        state = {"running": {"startedAt": started}}
        if exit_code is not None:
            state = {"terminated": {"exitCode": exit_code, "reason": "Error", "finishedAt": ago(1)}}
            if said:  # the termination message: the tail of the trainer's log (FallbackToLogsOnError)
                state["terminated"]["message"] = said
        status["containerStatuses"] = [{"name": "trainer", "state": state}]
    return {
        "metadata": {
            "name": f"alr-a1-{index}-x",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "spec": {"nodeName": node} if scheduled else {},
        "status": status,
    }


def observe_(spec=None, status=None, jobs=(), pods=(), workload=None, now=NOW, generation=1) -> Observation:
    return Observation(
        name="alr",
        namespace="ns",
        generation=generation,
        spec=TrainingSpec.model_validate(spec or {}),
        status=status or {},
        now=now,
        jobs=list(jobs),
        pods=list(pods),
        workload=workload,
    )


def conditions(decision) -> dict:
    return {c["type"]: c for c in decision.status["conditions"]}


def running_status(**extra) -> dict:
    """What the operator wrote once attempt 1 ran."""
    d = decide(observe_(jobs=[job()], pods=[pod()], now=NOW - timedelta(seconds=10)))
    return {**d.status, **extra}


def test_new_training_creates_its_first_attempt():
    d = decide(observe_())
    assert d.actions == [CreateAttempt(attempt=1, active_deadline_seconds=None)]
    assert d.status["phase"] == "Pending" and d.status["attempt"] == 1 and d.status["jobName"] == "alr-a1"
    created = conditions(d)["Created"]
    assert created["status"] == "True" and created["observedGeneration"] == 1
    assert [e.reason for e in d.events] == ["JobCreated", "GangScheduling"]  # not also New -> Pending


def test_deciding_again_over_the_same_cluster_changes_nothing():
    first = decide(observe_(jobs=[job()], pods=[pod()]))
    again = decide(observe_(status=first.status, jobs=[job()], pods=[pod()]))
    assert again.status_patch(first.status) == {}
    assert again.actions == [] and again.events == []


def test_all_pods_running_is_running_with_start_time_and_pending_duration():
    d = decide(observe_(spec={"resources": {"nodes": 2}}, jobs=[job()], pods=[pod(0), pod(1, node="sim-gpu-1")]))
    assert d.status["phase"] == "Running" and d.status["startTime"] == T(NOW)
    c = conditions(d)
    assert c["Running"]["status"] == "True" and c["Schedulable"]["status"] == "True"
    assert "sim-gpu-0, sim-gpu-1" in c["Schedulable"]["message"]
    assert d.pending_seconds == 60
    assert c["Stalled"]["status"] == "False"


def test_some_pods_running_is_still_pending():
    d = decide(observe_(spec={"resources": {"nodes": 2}}, jobs=[job()], pods=[pod(0)]))
    assert d.status["phase"] == "Pending"
    assert conditions(d)["Running"]["message"] == "1/2 pods running"


SCHEDULER = "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."


def test_unschedulable_pods_carry_the_schedulers_message():
    pods = [pod(0), pod(1), pod(2, phase="Pending", scheduled=False, message=SCHEDULER)]
    d = decide(observe_(spec={"resources": {"nodes": 3}, "algorithm": {"trainBatchSize": 24}}, jobs=[job()], pods=pods))
    schedulable = conditions(d)["Schedulable"]
    assert schedulable["status"] == "False" and schedulable["reason"] == "Unschedulable"
    assert SCHEDULER in schedulable["message"]
    assert d.status["phase"] == "Pending" and d.actions == []
    assert any(e.type == "Warning" and SCHEDULER in e.message for e in d.events)


def test_unschedulable_past_the_pending_timeout_fails_and_frees_the_job():
    pods = [pod(0, phase="Pending", scheduled=False, message=SCHEDULER)]  # unschedulable for 30 s
    d = decide(observe_(spec={"pendingTimeoutSeconds": 20}, jobs=[job()], pods=pods))
    assert d.status["phase"] == "Failed"
    failed = conditions(d)["Failed"]
    assert failed["reason"] == "PendingTimeout" and SCHEDULER in failed["message"]
    assert d.actions == [DeleteJob("alr-a1")]


def test_zero_pending_timeout_waits_loudly():
    pods = [pod(0, phase="Pending", scheduled=False, message=SCHEDULER)]
    d = decide(observe_(spec={"pendingTimeoutSeconds": 0}, jobs=[job()], pods=pods))
    assert d.status["phase"] == "Pending"
    assert "waiting indefinitely" in conditions(d)["Schedulable"]["message"]


def test_job_success_is_succeeded_with_completion_time():
    done = job(conditions=[cond("SuccessCriteriaMet"), cond("Complete")], completion_time=ago(2))
    d = decide(observe_(status=running_status(), jobs=[done], pods=[pod(phase="Succeeded", exit_code=0)]))
    assert d.status["phase"] == "Succeeded" and d.status["completionTime"] == ago(2)
    assert conditions(d)["Complete"]["status"] == "True"
    assert conditions(d)["Running"]["status"] == "False"


def test_failed_attempt_is_retried_as_the_next_attempt_from_the_checkpoint():
    failed = job(conditions=[cond("FailureTarget", reason="BackoffLimitExceeded", message="Job has reached the limit")])
    status = running_status(checkpoint={"step": 300, "path": "/checkpoints/alr/global_step_300"})
    d = decide(observe_(status=status, jobs=[failed], pods=[pod(phase="Failed", exit_code=1)]))
    assert d.actions == [DeleteJob("alr-a1"), CreateAttempt(attempt=2, active_deadline_seconds=None)]
    assert d.status["attempt"] == 2 and d.status["jobName"] == "alr-a2" and d.status["phase"] == "Pending"
    assert d.retried
    (retrying,) = [e for e in d.events if e.reason == "Retrying"]
    assert "attempt 1 failed" in retrying.message and "starting attempt 2" in retrying.message
    assert "step 300" in retrying.message and "exited 1" in retrying.message


def test_retries_exhausted_is_backoff_limit_exceeded():
    failed = job(4, conditions=[cond("Failed", reason="BackoffLimitExceeded")])
    status = running_status(attempt=4, jobName="alr-a4")
    d = decide(observe_(spec={"maxRetries": 3}, status=status, jobs=[failed]))
    assert d.status["phase"] == "Failed" and conditions(d)["Failed"]["reason"] == "BackoffLimitExceeded"
    assert d.actions == []


def test_config_error_exit_code_fails_without_retry():
    failed = job(conditions=[cond("FailureTarget", reason="PodFailurePolicy", message="exit code 78 matching FailJob")])
    d = decide(observe_(status=running_status(), jobs=[failed], pods=[pod(phase="Failed", exit_code=78)]))
    assert d.status["phase"] == "Failed" and d.status["attempt"] == 1
    failed_condition = conditions(d)["Failed"]
    assert failed_condition["reason"] == "ConfigError" and "exited 78" in failed_condition["message"]
    assert d.actions == []


# What `soundmind train` prints as its last line on a node with an old driver (tests/unit/train/test_preflight.py).
PREFLIGHT = (
    "soundmind train: preflight failed: node gpu-node-7: NVIDIA driver 550.54.15 found, "
    "580 or newer is needed (the trainer image's CUDA 13 wheels)\n"
)


@pytest.mark.parametrize("head_exit", [None, 143], ids=["head-failed-preflight", "worker-failed-head-stopped"])
def test_a_failed_preflight_is_a_config_error_with_its_message_and_no_retry(head_exit):
    job_says = "Container trainer for pod ns/alr-a1-1-x failed with exit code 78 matching FailJob rule at index 0"
    failed = job(conditions=[cond("FailureTarget", reason="PodFailurePolicy", message=job_says)])
    if head_exit is None:
        pods = [pod(0, phase="Failed", exit_code=78, said=PREFLIGHT)]
    else:  # the worker's node failed; the Job then stopped the head (SIGTERM: 143)
        pods = [pod(0, phase="Failed", exit_code=head_exit), pod(1, phase="Failed", exit_code=78, said=PREFLIGHT)]
    status = running_status()
    d = decide(observe_(spec={"maxRetries": 3}, status=status, jobs=[failed], pods=pods))
    assert d.status["phase"] == "Failed" and d.status["attempt"] == 1
    failed_condition = conditions(d)["Failed"]
    assert failed_condition["reason"] == "ConfigError"
    culprit = "alr-a1-0-x" if head_exit is None else "alr-a1-1-x"
    assert f"pod {culprit} exited 78 (Error): {PREFLIGHT.strip()}" in failed_condition["message"]
    assert "Retried" not in conditions(d) and d.actions == []  # no next attempt, nothing deleted
    assert any(e.type == "Warning" and "NVIDIA driver 550.54.15" in e.message for e in d.events)
    again = decide(observe_(spec={"maxRetries": 3}, status=d.status, jobs=[failed], pods=pods))
    assert again.status == d.status and again.actions == []  # and stays so


def test_deadline_exceeded_is_not_retried():
    failed = job(conditions=[cond("Failed", reason="DeadlineExceeded")])
    d = decide(observe_(spec={"activeDeadlineSeconds": 600}, status=running_status(), jobs=[failed]))
    assert conditions(d)["Failed"]["reason"] == "DeadlineExceeded" and d.actions == []


def test_a_retry_gets_what_is_left_of_the_runs_deadline():
    failed = job(conditions=[cond("Failed", reason="BackoffLimitExceeded")])
    status = running_status(startTime=ago(100))
    d = decide(observe_(spec={"activeDeadlineSeconds": 600}, status=status, jobs=[failed]))
    assert CreateAttempt(attempt=2, active_deadline_seconds=500) in d.actions


def test_a_job_deleted_under_the_training_counts_as_a_failed_attempt():
    d = decide(observe_(status=running_status(), jobs=[]))
    assert d.status["attempt"] == 2 and CreateAttempt(attempt=2, active_deadline_seconds=None) in d.actions


def test_jobs_of_earlier_attempts_are_cleaned_up_but_later_ones_kept():
    status = running_status(attempt=2, jobName="alr-a2")
    d = decide(observe_(status=status, jobs=[job(1), job(2), job(3)], pods=[pod()]))
    assert d.actions == [DeleteJob("alr-a1")]


def test_suspend_suspends_the_job_and_resume_unsuspends_it():
    d = decide(observe_(spec={"suspend": True}, status=running_status(), jobs=[job()], pods=[pod()]))
    assert d.actions == [PatchJob("alr-a1", {"suspend": True})] and d.status["phase"] == "Suspended"
    d = decide(observe_(status=d.status, jobs=[job(suspend=True)]))
    assert d.actions == [PatchJob("alr-a1", {"suspend": False})] and d.status["phase"] == "Pending"


def test_queued_in_kueue_shows_kueues_reason_and_leaves_suspend_to_kueue():
    workload = {
        "status": {
            "conditions": [
                cond("QuotaReserved", "False", "Pending", "couldn't assign flavors to pod set main: insufficient quota")
            ]
        }
    }
    d = decide(observe_(spec={"queueName": "gpus"}, jobs=[job(suspend=True)], workload=workload))
    assert d.status["phase"] == "Queued" and d.actions == []
    schedulable = conditions(d)["Schedulable"]
    assert schedulable["reason"] == "Pending" and "insufficient quota" in schedulable["message"]
    no_workload = decide(observe_(spec={"queueName": "gpus"}, jobs=[job(suspend=True)]))
    assert conditions(no_workload)["Schedulable"]["reason"] == "WaitingForKueue"
    admitted = decide(observe_(spec={"queueName": "gpus"}, jobs=[job(suspend=False)], pods=[pod()]))
    assert admitted.status["phase"] == "Running"


def test_ttl_change_is_patched_onto_the_job():
    d = decide(observe_(spec={"ttlSecondsAfterFinished": 60}, status=running_status(), jobs=[job()], pods=[pod()]))
    assert d.actions == [PatchJob("alr-a1", {"ttlSecondsAfterFinished": 60})]


@pytest.mark.parametrize("updated, stalled", [(ago(4000), "True"), (ago(30), "False"), (None, "True")])
def test_stalled_when_progress_is_older_than_the_stall_timeout(updated, stalled):
    status = running_status()
    status["conditions"] = [
        {**c, "lastTransitionTime": ago(5000)} if c["type"] == "Running" else c for c in status["conditions"]
    ]
    if updated:
        status["progress"] = {"step": 42, "updatedAt": updated}
    d = decide(observe_(spec={"stallTimeoutSeconds": 3600}, status=status, jobs=[job()], pods=[pod()]))
    assert conditions(d)["Stalled"]["status"] == stalled
    assert "progress" not in d.status_patch(status) and "checkpoint" not in d.status


def test_last_transition_time_changes_only_when_the_status_does():
    first = decide(observe_(jobs=[job()], pods=[pod()], now=NOW - timedelta(seconds=30)))
    later = decide(observe_(status=first.status, jobs=[job()], pods=[pod()]))
    assert conditions(later)["Running"]["lastTransitionTime"] == T(NOW - timedelta(seconds=30))
    failed = job(conditions=[cond("Failed", reason="DeadlineExceeded")])
    ended = decide(observe_(status=later.status, jobs=[failed]))
    assert conditions(ended)["Running"]["lastTransitionTime"] == T(NOW)


def test_gpu_seconds_count_each_pod_second_once_across_passes_and_attempts():
    first = decide(observe_(jobs=[job()], pods=[pod(started=None)]))
    assert first.status["gpuSeconds"] == 8 * 100
    later = decide(observe_(status=first.status, jobs=[job()], pods=[pod(started=None)], now=NOW + timedelta(10)))
    assert later.status["gpuSeconds"] == 8 * (100 + 10 * 86400)
    # The next attempt's pods add to what earlier attempts used.
    status = {**first.status, "attempt": 2, "jobName": "alr-a2"}
    second = decide(observe_(status=status, jobs=[job(2)], pods=[pod(started=T(NOW))], now=NOW + timedelta(seconds=5)))
    assert second.status["gpuSeconds"] == 8 * 100 + 8 * 5


def test_terminal_trainings_are_left_alone():
    done = {"phase": "Succeeded", "attempt": 1, "jobName": "alr-a1", "conditions": []}
    d = decide(observe_(status=done, jobs=[]))
    assert d.actions == [] and d.events == [] and d.status["phase"] == "Succeeded"


def test_a_pod_ending_before_the_jobs_verdict_changes_nothing():
    status = running_status()
    pods = [pod(0, phase="Failed", exit_code=1), pod(1, node="sim-gpu-1")]
    d = decide(observe_(spec={"resources": {"nodes": 2}}, status=status, jobs=[job()], pods=pods))
    assert d.status["phase"] == "Running" and d.actions == []
    assert [e for e in d.events if e.reason != "Scheduled"] == []


# -- all-or-nothing placement (status.gang) ------------------------------------------------------

BIG = {"resources": {"nodes": 3}, "algorithm": {"trainBatchSize": 24}}


def bound(index, node, seconds_ago):
    """A pod of the group the scheduler bound `seconds_ago` (kwok runs it at once)."""
    placed = pod(index, node=node, started=ago(seconds_ago))
    placed["status"]["conditions"] = [cond("PodScheduled", "True", when=ago(seconds_ago))]
    return placed


def unplaced(index):
    return pod(index, phase="Pending", scheduled=False, message=SCHEDULER)


@pytest.mark.parametrize(
    ("spec", "api", "level", "pod_group"),
    [
        ({}, True, "PodGroup", True),
        ({}, False, "Operator", False),
        ({"queueName": "gpus"}, True, "Kueue", False),  # Kueue admits the Job; no PodGroup beside it
        ({"queueName": "gpus"}, False, "Kueue", False),
    ],
)
def test_the_gang_level_follows_what_the_cluster_serves(spec, api, level, pod_group):
    d = decide(Observation(**{**observe_(spec=spec).__dict__, "pod_group_api": api}))
    assert d.actions == [CreateAttempt(1, None, pod_group)]
    assert d.status["gang"] == level
    (told,) = [e for e in d.events if e.reason == "GangScheduling"]
    assert told.type == "Normal" and told.message.startswith(f"gang={level}: ")


def test_an_existing_job_keeps_the_level_it_was_made_for():
    """The operator restarted on a cluster that now serves PodGroups: the running Job's pods joined
    no group, so the guard, not the scheduler, still watches them."""
    plain = job()
    plain["spec"]["template"] = {"spec": {}}
    d = decide(Observation(**{**observe_(jobs=[plain], pods=[pod()]).__dict__, "pod_group_api": True}))
    assert d.status["gang"] == "Operator"
    grouped = job()
    grouped["spec"]["template"] = {"spec": {"schedulingGroup": {"podGroupName": "alr-a1"}}}
    assert decide(observe_(jobs=[grouped], pods=[pod()])).status["gang"] == "PodGroup"


def test_level_pod_group_reports_the_schedulers_verdict_on_the_whole_group():
    verdict = "minCount (3) cannot be satisfied: 2 scheduled, 0 remaining"
    group = {
        "metadata": {"name": "alr-a1", "labels": {names.ATTEMPT_LABEL: "1"}},
        "status": {"conditions": [cond("PodGroupInitiallyScheduled", "False", "Unschedulable", verdict)]},
    }
    grouped = job()
    grouped["spec"]["template"] = {"spec": {"schedulingGroup": {"podGroupName": "alr-a1"}}}
    d = decide(
        Observation(
            **{
                **observe_(spec=BIG, jobs=[grouped], pods=[unplaced(i) for i in range(3)]).__dict__,
                "pod_groups": [group],
            }
        )
    )
    schedulable = conditions(d)["Schedulable"]
    assert f"PodGroup alr-a1: {verdict}" in schedulable["message"] and "all-or-nothing" in schedulable["message"]
    assert d.actions == [] and d.status["phase"] == "Pending"


def test_pod_groups_of_earlier_attempts_are_deleted():
    old = {"metadata": {"name": "alr-a1", "labels": {names.ATTEMPT_LABEL: "1"}}}
    current = {"metadata": {"name": "alr-a2", "labels": {names.ATTEMPT_LABEL: "2"}}}
    status = {"attempt": 2, "jobName": "alr-a2", "gang": "PodGroup"}
    d = decide(
        Observation(**{**observe_(status=status, jobs=[job(2)], pods=[pod()]).__dict__, "pod_groups": [old, current]})
    )
    assert observe.DeletePodGroup("alr-a1") in d.actions and observe.DeletePodGroup("alr-a2") not in d.actions


def guarded(pods, status=None, now=NOW, spec=None, suspend=False):
    return decide(
        observe_(
            spec={**BIG, "gangTimeoutSeconds": 60, **(spec or {})},
            status=status,
            jobs=[job(suspend=suspend, created=ago(600))],
            pods=pods,
            now=now,
        )
    )


def test_the_guard_waits_gang_timeout_seconds_before_releasing_a_partial_placement():
    pods = [bound(0, "sim-gpu-0", 59), bound(1, "sim-gpu-1", 30), unplaced(2)]
    d = guarded(pods)
    assert d.actions == [] and d.status["phase"] == "Pending" and not d.status.get("gangReleases")


def test_the_guard_releases_a_partial_placement_and_keeps_the_attempt():
    pods = [bound(0, "sim-gpu-0", 61), bound(1, "sim-gpu-1", 30), unplaced(2)]
    d = guarded(pods)
    assert d.actions == [PatchJob("alr-a1", {"suspend": True})]
    assert d.status["attempt"] == 1 and d.status["gangReleases"] == 1 and d.status["phase"] == "Pending"
    retry_in = (observe.parse_time(d.status["gangRetryAt"]) - NOW).total_seconds()
    assert 60 <= retry_in <= 90  # gangTimeoutSeconds × 2^0, stretched by up to half
    said = conditions(d)["Schedulable"]
    assert said["status"] == "False" and said["reason"] == "PartiallyPlaced"
    assert "2/3 pods placed (on sim-gpu-0, sim-gpu-1) for 61s (gangTimeoutSeconds=60)" in said["message"]
    assert SCHEDULER in said["message"]
    assert [e.type for e in d.events if e.reason == "PartiallyPlaced"] == ["Warning"]
    assert d.status["gpuSeconds"] == 0, "a partial placement is not work"


def test_a_released_group_stays_suspended_until_its_retry_then_is_placed_again():
    released = guarded([bound(0, "sim-gpu-0", 61), unplaced(1), unplaced(2)]).status
    retry_at = observe.parse_time(released["gangRetryAt"])
    waiting = guarded([], status=released, now=retry_at - timedelta(seconds=1), suspend=True)
    assert waiting.actions == [] and waiting.status["phase"] == "Pending"
    assert conditions(waiting)["Schedulable"]["reason"] == "PartiallyPlaced"
    again = guarded([], status=waiting.status, now=retry_at, suspend=True)
    assert again.actions == [PatchJob("alr-a1", {"suspend": False})]
    assert [e.reason for e in again.events] == ["PlacingAgain"] and again.status["gangRetryAt"] is None


def test_the_backoff_doubles_and_differs_between_trainings():
    def retry_after(releases, name="alr"):
        obs = observe_(spec={**BIG, "gangTimeoutSeconds": 60})
        return observe._backoff_seconds(Observation(**{**obs.__dict__, "name": name}), releases)

    delays = [retry_after(r) for r in (1, 2, 3, 4)]
    assert all(60 * 2**i <= d <= 90 * 2**i for i, d in enumerate(delays)), delays
    assert retry_after(30) <= observe.MAX_GANG_BACKOFF_SECONDS * 1.5
    assert len({retry_after(1, name) for name in ("a", "b", "c", "d")}) > 1, "two released groups do not retry in step"


def test_pending_timeout_bounds_the_whole_wait_across_releases():
    released = guarded([bound(0, "sim-gpu-0", 61), unplaced(1), unplaced(2)]).status
    d = guarded([], status=released, spec={"pendingTimeoutSeconds": 300}, suspend=True)  # Job created 600 s ago
    assert d.status["phase"] == "Failed" and conditions(d)["Failed"]["reason"] == "PendingTimeout"
    assert d.actions == [DeleteJob("alr-a1")]


def test_the_guard_is_off_at_gang_timeout_zero_and_never_touches_kueues_jobs():
    pods = [bound(0, "sim-gpu-0", 600), unplaced(1), unplaced(2)]
    assert guarded(pods, spec={"gangTimeoutSeconds": 0}).actions == []
    queued = decide(observe_(spec={**BIG, "queueName": "gpus", "gangTimeoutSeconds": 60}, jobs=[job()], pods=pods))
    assert queued.actions == [] and queued.status["gang"] == "Kueue"


def test_gpu_seconds_count_only_the_time_the_whole_group_ran():
    spec = {"resources": {"nodes": 2}}
    # Pod 0 waited alone for 100 s before pod 1 started 20 s ago: 20 s × 16 GPUs.
    d = decide(observe_(spec=spec, jobs=[job()], pods=[pod(0, started=ago(120)), pod(1, started=ago(20))]))
    assert d.status["gpuSeconds"] == 16 * 20
    alone = decide(observe_(spec=spec, jobs=[job()], pods=[pod(0, started=ago(120))]))
    assert alone.status["gpuSeconds"] == 0


# -- a running group that loses a member ----------------------------------------------------------


def lost(index=1, node="sim-gpu-1") -> dict:
    """What the pod garbage collector leaves of a pod whose node was deleted."""
    gone = pod(index, phase="Failed", node=node)
    gone["status"]["conditions"].append(
        cond("DisruptionTarget", reason="DeletionByPodGC", message="PodGC: node no longer exists")
    )
    return gone


def two_running() -> dict:
    pods = [pod(0), pod(1, node="sim-gpu-1")]
    return decide(
        observe_(spec={"resources": {"nodes": 2}}, jobs=[job()], pods=pods, now=NOW - timedelta(seconds=10))
    ).status


def test_a_pod_lost_with_its_node_retries_the_whole_group_as_the_next_attempt():
    d = decide(observe_(spec={"resources": {"nodes": 2}}, status=two_running(), jobs=[job()], pods=[pod(0), lost()]))
    assert d.actions == [DeleteJob("alr-a1"), CreateAttempt(attempt=2, active_deadline_seconds=None)]
    assert d.status["attempt"] == 2 and d.retried
    retried = conditions(d)["Retried"]
    assert retried["status"] == "True" and retried["reason"] == "PodLost"
    assert "alr-a1-1-x on node sim-gpu-1 was lost (DeletionByPodGC" in retried["message"]
    (retrying,) = [e for e in d.events if e.reason == "Retrying"]
    assert "sim-gpu-1" in retrying.message and "starting attempt 2" in retrying.message
    assert not [e for e in d.events if e.reason == "PodLost"], "one event for the retry, not two"


def test_a_member_replaced_while_the_operator_was_away_retries_the_group():
    replacement = pod(1, node="sim-gpu-2")
    replacement["metadata"]["creationTimestamp"] = ago(2)  # after the group started running (10 s ago)
    d = decide(
        observe_(spec={"resources": {"nodes": 2}}, status=two_running(), jobs=[job()], pods=[pod(0), replacement])
    )
    assert d.status["attempt"] == 2 and conditions(d)["Retried"]["reason"] == "PodLost"
    assert "replaced a member of the running group" in conditions(d)["Retried"]["message"]


def test_a_lost_pod_with_no_retry_left_fails_and_frees_the_rest_of_the_group():
    spec = {"resources": {"nodes": 2}, "maxRetries": 0}
    running = decide(
        observe_(spec=spec, jobs=[job()], pods=[pod(0), pod(1, node="sim-gpu-1")], now=NOW - timedelta(seconds=10))
    ).status
    d = decide(observe_(spec=spec, status=running, jobs=[job()], pods=[pod(0), lost()]))
    assert d.status["phase"] == "Failed" and conditions(d)["Failed"]["reason"] == "BackoffLimitExceeded"
    assert d.actions == [DeleteJob("alr-a1")]


def test_a_pod_disrupted_before_the_group_ran_is_left_to_the_job():
    d = decide(observe_(spec={"resources": {"nodes": 2}}, jobs=[job()], pods=[pod(0), lost()]))
    assert d.status["attempt"] == 1 and d.actions == [] and "Retried" not in conditions(d)


# -- when time alone changes the decision (the loop's next pass without a change) ----------------


def test_a_running_group_accrues_gpu_seconds_so_time_alone_changes_it():
    d = decide(observe_(status=running_status(), jobs=[job()], pods=[pod()]))
    assert d.periodic and d.due is None


def test_unschedulable_pods_fall_due_at_the_pending_timeout_and_not_before():
    pods = [pod(0, phase="Pending", scheduled=False, message=SCHEDULER)]  # unschedulable since 30 s ago
    d = decide(observe_(spec={"pendingTimeoutSeconds": 100}, jobs=[job()], pods=pods))
    assert not d.periodic and d.due == NOW + timedelta(seconds=70)
    waiting = decide(observe_(spec={"pendingTimeoutSeconds": 0}, jobs=[job()], pods=pods))
    assert not waiting.periodic and waiting.due is None, "waiting indefinitely: nothing falls due"


def test_a_queued_training_reads_kueues_workload_every_resync():
    d = decide(observe_(spec={"queueName": "gpus"}, jobs=[job(suspend=True)]))
    assert d.periodic


def test_the_guard_falls_due_when_gang_timeout_seconds_pass_and_at_the_retry():
    partial = guarded([bound(0, "sim-gpu-0", 20), unplaced(1), unplaced(2)])  # placed 20 s ago, timeout 60
    assert partial.due == NOW + timedelta(seconds=40)
    released = guarded([bound(0, "sim-gpu-0", 61), unplaced(1), unplaced(2)]).status
    retry_at = observe.parse_time(released["gangRetryAt"])
    waiting = guarded([], status=released, suspend=True, spec={"pendingTimeoutSeconds": 0})
    assert waiting.due == retry_at and not waiting.periodic


# -- the most specific reason: per-pod reasons beside the group's, opaque errors explained ---------

OPAQUE = 'error in "DynamicResources" PodGroupPostFilter plugins: not found'
NODES = tuple(
    references.node_view({"metadata": {"name": f"sim-gpu-{i}"}, "status": {"allocatable": {"nvidia.com/gpu": "8"}}})
    for i in range(3)
)
BOUND = {claim: references.ClaimView("Bound") for claim in ("soundmind-checkpoints", "alr-data", "models")}


def gang(pods, *, group_verdict=None, claims=BOUND, nodes=NODES, spec=BIG, status=None) -> observe.Decision:
    grouped = job()
    grouped["spec"]["template"] = {"spec": {"schedulingGroup": {"podGroupName": "alr-a1"}}}
    group = {"metadata": {"name": "alr-a1", "labels": {names.ATTEMPT_LABEL: "1"}}, "status": {"conditions": []}}
    if group_verdict:
        group["status"]["conditions"] = [cond("PodGroupInitiallyScheduled", "False", "Unschedulable", group_verdict)]
    seen = references.Seen(claims=claims, nodes=nodes)
    obs = observe_(spec=spec, status=status, jobs=[grouped], pods=pods)
    return decide(Observation(**{**obs.__dict__, "pod_groups": [group], "seen": seen}))


def refused(index, reason, message):
    unplaced_pod = pod(index, phase="Pending", scheduled=False, message=message)
    unplaced_pod["status"]["conditions"][0]["reason"] = reason
    return unplaced_pod


def test_a_missing_claim_behind_the_schedulers_opaque_podgroup_error_is_named():
    """Each pod carries `SchedulerError` with a message that names a plugin, not the claim; the
    training said Schedulable=Unknown "waiting for the scheduler"."""
    claims = {k: v for k, v in BOUND.items() if k != "alr-data"}
    d = gang([refused(i, "SchedulerError", OPAQUE) for i in range(3)], claims=claims)
    schedulable = conditions(d)["Schedulable"]
    assert (schedulable["status"], schedulable["reason"]) == ("False", "ClaimNotFound")
    assert schedulable["message"] == (
        '3/3 pods: spec.storage.data.claimName: PersistentVolumeClaim "alr-data" not found in ns '
        f"(the scheduler says: {OPAQUE} (3 pods)) (all-or-nothing: none of the 3 pods holds a GPU)"
    )
    resolved = conditions(d)["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"], resolved["message"]) == (
        "False",
        "ClaimNotFound",
        'spec.storage.data.claimName: PersistentVolumeClaim "alr-data" not found in ns',
    )
    assert d.status["phase"] == "Pending"
    assert {e.reason for e in d.events if e.type == "Warning"} == {"ClaimNotFound"}


def test_too_few_gpus_for_the_group_gives_a_pods_reason_beside_the_groups():
    verdict = "minCount (3) cannot be satisfied: 1 scheduled, 1 remaining, pod group preemption: not eligible"
    insufficient = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    pods = [refused(0, "Unschedulable", insufficient)] + [refused(i, "Unschedulable", verdict) for i in (1, 2)]
    d = gang(pods, group_verdict=verdict)
    schedulable = conditions(d)["Schedulable"]
    assert (schedulable["status"], schedulable["reason"]) == ("False", "Unschedulable")
    assert schedulable["message"] == (
        f"3/3 pods: PodGroup alr-a1: {verdict}; {insufficient} (all-or-nothing: none of the 3 pods holds a GPU)"
    )
    assert conditions(d)["ResolvedRefs"]["status"] == "True"


def test_a_group_larger_than_the_cluster_is_named_by_the_reference_check():
    d = gang([unplaced(i) for i in range(3)], nodes=NODES[:2])
    resolved = conditions(d)["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"], resolved["message"]) == (
        "False",
        "NoMatchingNode",
        "spec.resources.nodes: 3 pods need a node each with 8 nvidia.com/gpu, but only 2 node(s) offer that many "
        "(sim-gpu-0, sim-gpu-1)",
    )
    assert conditions(d)["Schedulable"]["reason"] == "NoMatchingNode"
    assert any(
        e.type == "Warning" and e.message.startswith("ResolvedRefs=False: spec.resources.nodes") for e in d.events
    )


def test_references_that_resolve_again_are_news_once():
    missing = decide(Observation(**{**observe_().__dict__, "seen": references.Seen(claims={}, nodes=NODES)}))
    assert conditions(missing)["ResolvedRefs"]["reason"] == "ClaimNotFound"
    found = decide(
        Observation(**{**observe_(status=missing.status).__dict__, "seen": references.Seen(claims=BOUND, nodes=NODES)})
    )
    assert conditions(found)["ResolvedRefs"]["status"] == "True"
    assert [e.reason for e in found.events if "ResolvedRefs" in e.message] == ["Resolved"]


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("CreateContainerConfigError", 'secret "hf-token" not found'),
        ("ImagePullBackOff", 'Back-off pulling image "registry.invalid/trainer:1"'),
        ("ErrImagePull", 'failed to pull image "registry.invalid/trainer:1": not found'),
    ],
)
def test_a_trainer_container_that_cannot_start_gives_its_reason_and_the_pods_message(reason, message):
    waiting = pod(0, phase="Pending")
    waiting["status"]["containerStatuses"] = [
        {"name": "trainer", "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}
    ]
    d = decide(observe_(jobs=[job()], pods=[waiting]))
    running = conditions(d)["Running"]
    assert (running["status"], running["reason"]) == ("False", reason)
    assert running["message"] == f"0/1 pods running; pod alr-a1-0-x {reason}: {message}"
    assert d.status["phase"] == "Pending"
    assert any(e.type == "Warning" and e.reason == reason for e in d.events)
