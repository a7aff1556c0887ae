"""From what the cluster shows to what the training's status should say, and what to do next.

`decide` is a pure function: the training (spec, generation, status), the Job of its current
attempt, that Job's pods, its PodGroups, Kueue's Workload for it, what the cluster offers for gang
scheduling, the claims and nodes its spec refers to, and the time. It returns the operator's status
fields, the events to record for every transition, and the actions for the caller to carry out
(create the children of an attempt, delete a Job, patch a Job). Deciding from observations alone
is what makes a reconcile safe to repeat: a second run over the same cluster decides the same.

The operator owns every status field except `progress`, `checkpoint` and `model` (the trainer's), and
never writes those.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind_operator import children, pod_status, references
from soundmind_operator.conditions import (
    Event,
    StatusBuilder,
    StatusShape,
    condition,
    format_time,
    parse_time,
    status_patch,
    true,
)
from soundmind_operator.training import names

Obj = dict[str, Any]

# Phases (contract).
PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, SUSPENDED = (
    "Pending",
    "Queued",
    "Running",
    "Succeeded",
    "Failed",
    "Suspended",
)
TERMINAL_PHASES = (SUCCEEDED, FAILED)

# Condition types and the Failed reasons (contract).
CREATED, SCHEDULABLE, RUNNING_CONDITION, STALLED, COMPLETE, FAILED_CONDITION = (
    "Created",
    "Schedulable",
    "Running",
    "Stalled",
    "Complete",
    "Failed",
)
RETRIED = "Retried"  # why the current attempt exists (True from the first retry on)
POD_TEMPLATE_CURRENT = children.POD_TEMPLATE_CURRENT  # the attempt's pods run this operator's template
POD_LOST = "PodLost"  # a pod of the running group was evicted, preempted or lost with its node
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
CONFIG_ERROR = "ConfigError"
DEADLINE_EXCEEDED = "DeadlineExceeded"
PENDING_TIMEOUT = "PendingTimeout"
PARTIALLY_PLACED = "PartiallyPlaced"

# Gang levels (status.gang, contract): what keeps a group from holding GPUs it cannot use.
GANG_POD_GROUP, GANG_KUEUE, GANG_OPERATOR = "PodGroup", "Kueue", "Operator"
POD_GROUP_SCHEDULED = "PodGroupInitiallyScheduled"  # the scheduler's condition on a PodGroup
# The operator's guard waits gangTimeoutSeconds × 2^(release-1) (and up to half as long again, by
# training, so that two released groups do not come back in step) before placing a group again,
# at most this long: a group retrying all the time holds its partial GPUs at most half the time.
MAX_GANG_BACKOFF_SECONDS = 3600

# Status fields this module writes; everything else under status (progress, checkpoint and model, the
# trainer's) is left alone.
OPERATOR_STATUS_FIELDS = (
    "phase",
    "conditions",
    "observedGeneration",
    "startTime",
    "completionTime",
    "attempt",
    "jobName",
    "gpuSeconds",
    "gpuSecondsUpdatedAt",
    "gang",
    "gangReleases",
    "gangRetryAt",
)


@dataclass(frozen=True)
class CreateAttempt:
    """Create the children (idempotently) and the Job of `attempt`; with `pod_group`, its PodGroup
    first, which the Job's pods join."""

    attempt: int
    active_deadline_seconds: int | None
    pod_group: bool = False


@dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclass(frozen=True)
class DeletePodGroup:
    name: str


@dataclass(frozen=True)
class PatchJob:
    name: str
    spec: Obj  # merge patch of the Job's mutable spec fields


Action = CreateAttempt | DeleteJob | DeletePodGroup | PatchJob


@dataclass
class Decision:
    status: Obj
    events: list[Event] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    pending_seconds: float | None = None  # how long the attempt waited for its pods, when it just started running
    retried: bool = False
    # When time alone may change the decision. `periodic`: it changes continuously (GPU-seconds
    # accrue while pods hold GPUs; a queued Job's Kueue Workload is read, not watched). `due`: the
    # earliest moment a timeout or a retry falls due. Neither: only a change changes it.
    periodic: bool = False
    due: datetime | None = None

    def due_at(self, moment: datetime) -> None:
        self.due = moment if self.due is None else min(self.due, moment)

    def status_patch(self, current: Obj) -> Obj:
        """Only the operator's fields that differ from `current` (empty: nothing to write)."""
        return status_patch(self.status, current)


@dataclass(frozen=True)
class Observation:
    name: str
    namespace: str
    generation: int
    spec: TrainingSpec
    status: Obj
    now: datetime
    jobs: list[Obj] = field(default_factory=list)  # every Job of the training (any attempt)
    pods: list[Obj] = field(default_factory=list)  # the pods of the current attempt's Job
    workload: Obj | None = None  # Kueue's Workload for the current Job, when queued
    job_template: str | None = None  # the hash of the pod template this operator builds for the current Job
    pod_group_api: bool = False  # the cluster serves scheduling.k8s.io/v1beta1 PodGroups (found at start-up)
    pod_groups: list[Obj] = field(default_factory=list)  # every PodGroup of the training (any attempt)
    # Why the verl command the pods would run is invalid (bad extraArgs), checked before any Job exists.
    config_error: str | None = None
    seen: references.Seen = references.Seen()  # the claims and nodes the spec refers to

    def problems(self) -> list[references.Problem]:
        """What the reference check finds wrong with the claims and nodes the spec refers to."""
        return references.problems(self.namespace, references.training_needs(self.spec), self.seen)


TRAINING_STATUS = StatusShape(
    owned_fields=OPERATOR_STATUS_FIELDS,
    condition_order=(
        CREATED,
        RETRIED,
        SCHEDULABLE,
        references.RESOLVED_REFS,
        RUNNING_CONDITION,
        STALLED,
        COMPLETE,
        FAILED_CONDITION,
        POD_TEMPLATE_CURRENT,
    ),
    warning_phases=(FAILED,),
)


def _new_status(obs: Observation) -> StatusBuilder:
    status = StatusBuilder(TRAINING_STATUS, obs.status, obs.generation, obs.now)
    status.fields.setdefault("attempt", 1)
    return status


def decide(obs: Observation) -> Decision:
    status = _new_status(obs)
    if status.phase in TERMINAL_PHASES:
        return Decision(status=status.result())
    attempt = status.fields["attempt"]
    job_name = names.job(obs.name, attempt)
    job = next((j for j in obs.jobs if j["metadata"]["name"] == job_name), None)
    actions: list[Action] = [DeleteJob(j["metadata"]["name"]) for j in _stale(obs.jobs, attempt)]
    actions += [DeletePodGroup(g["metadata"]["name"]) for g in _stale(obs.pod_groups, attempt)]
    decision = Decision(status={}, actions=actions)
    references.set_condition(status, obs.problems())

    if job is None and status.fields.get("jobName") != job_name and obs.config_error:
        _fail(status, CONFIG_ERROR, f"not started: {obs.config_error}")
    elif job is None and status.fields.get("jobName") != job_name:
        _create_attempt(obs, status, decision, attempt)
    elif job is None:
        _attempt_failed(obs, status, decision, attempt, None, "JobDeleted", f"Job {job_name} was deleted")
    else:
        _observe_job(obs, status, decision, attempt, job)
        _pod_template_current(obs, status, job)

    _account_gpu_seconds(obs, status)
    decision.periodic = bool(obs.spec.queue_name) or any(_holds_gpus(p) for p in obs.pods)
    decision.status = status.result()
    decision.events = decision.events + status.events  # a retry is announced before its new attempt
    return decision


def _pod_template_current(obs: Observation, status: StatusBuilder, job: Obj) -> None:
    """Whether the attempt's pods run the template this operator builds. A Job's template is fixed
    for its attempt, so a newer operator's reaches the training at its next attempt; the condition
    says so, and how to make that attempt now."""
    if obs.job_template is None:  # not known to this pass
        return
    name = job["metadata"]["name"]
    recorded = (job["metadata"].get("annotations") or {}).get(children.POD_TEMPLATE_ANNOTATION)
    held_before = (status.condition(POD_TEMPLATE_CURRENT) or {}).get("status") == "False"
    if recorded == obs.job_template:
        message = f"Job {name}'s pods run the template this operator builds"
        status.set_condition(POD_TEMPLATE_CURRENT, "True", "Current", message, announce=held_before)
        return
    next_attempt = (
        f"this operator's template reaches the training at its next attempt, or now with: kubectl delete job "
        f"{name} -n {obs.namespace} (attempt {status.fields['attempt'] + 1} resumes from the last checkpoint, "
        "and counts against maxRetries)"
    )
    if recorded is None:  # made by an operator that did not record it
        message = f"Job {name} does not say which pod template it runs; {next_attempt}"
        status.set_condition(POD_TEMPLATE_CURRENT, "Unknown", "NotRecorded", message)
        return
    message = f"Job {name}'s pods run the template an earlier operator built; {next_attempt}"
    status.set_condition(POD_TEMPLATE_CURRENT, "False", children.OPERATOR_CHANGE_HELD, message, announce=False)
    if not held_before:  # a first False is no news to StatusBuilder; a held template is, once
        status.events.append(Event("Normal", children.OPERATOR_CHANGE_HELD, f"{POD_TEMPLATE_CURRENT}=False: {message}"))


def _stale(children: list[Obj], attempt: int) -> list[Obj]:
    """Jobs (PodGroups) of earlier attempts still around (the operator stopped between deleting
    and recording, or a retry replaced the group)."""
    return [
        c
        for c in children
        if int((c["metadata"].get("labels") or {}).get(names.ATTEMPT_LABEL, attempt)) < attempt
        and not c["metadata"].get("deletionTimestamp")
    ]


def gang_level(spec: TrainingSpec, pod_group_api: bool) -> str:
    """Who places a new attempt's group all-or-nothing. Kueue, when the training names a queue: it
    admits the whole group at once (and, with waitForPodsReady, evicts a group whose pods do not all
    start), and unsuspending its Job is Kueue's alone. Otherwise the scheduler, where the cluster
    serves PodGroups; else the operator's guard."""
    if spec.queue_name:
        return GANG_KUEUE
    return GANG_POD_GROUP if pod_group_api else GANG_OPERATOR


def _job_gang_level(spec: TrainingSpec, job: Obj) -> str:
    """The level a Job was made for (the cluster may have changed since; its pods have not)."""
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    return GANG_POD_GROUP if template.get("schedulingGroup") else gang_level(spec, False)


def _gang_message(obs: Observation, level: str, pod_group: str) -> str:
    nodes = obs.spec.resources.nodes
    if level == GANG_POD_GROUP:
        return (
            f"the scheduler places the {nodes} pod(s) all-or-nothing (PodGroup {pod_group}, gang minCount {nodes}): "
            "no pod holds a GPU until all fit"
        )
    if level == GANG_KUEUE:
        return (
            f"Kueue admits the {nodes} pod(s) all-or-nothing from LocalQueue {obs.spec.queue_name!r} "
            "(with waitForPodsReady it also evicts a group whose pods do not all start)"
        )
    timeout = obs.spec.gang_timeout_seconds
    guard = (
        f"if only some of the {nodes} pods are placed for gangTimeoutSeconds={timeout}, the operator releases "
        "their GPUs (suspends the Job, keeps the attempt) and places the group again with backoff"
        if timeout
        else "gangTimeoutSeconds is 0: a partly placed group keeps its GPUs"
    )
    return f"no gang scheduling on this cluster (no scheduling.k8s.io/v1beta1 PodGroups) and no queueName: {guard}"


def _set_gang(obs: Observation, status: StatusBuilder, level: str, attempt: int) -> None:
    if status.fields.get("gang") != level:
        message = _gang_message(obs, level, names.pod_group(obs.name, attempt))
        status.events.append(Event("Normal", "GangScheduling", f"gang={level}: {message}"))
    status.fields["gang"] = level


def _remaining_deadline(obs: Observation, status: StatusBuilder) -> int | None:
    """The run's deadline, less what earlier attempts used (at least 1 s, so the Job fails at once)."""
    deadline = obs.spec.active_deadline_seconds
    started = parse_time(status.fields.get("startTime"))
    if deadline is None or started is None:
        return deadline
    return max(1, deadline - int((obs.now - started).total_seconds()))


def _create_attempt(obs: Observation, status: StatusBuilder, decision: Decision, attempt: int) -> None:
    job_name = names.job(obs.name, attempt)
    level = gang_level(obs.spec, obs.pod_group_api)
    decision.actions.append(CreateAttempt(attempt, _remaining_deadline(obs, status), level == GANG_POD_GROUP))
    status.fields.update(gangReleases=None, gangRetryAt=None)  # a new group starts with a clean slate
    status.fields["jobName"] = job_name
    status.set_condition(CREATED, "True", "JobCreated", f"created Job {job_name} (attempt {attempt})")
    _set_gang(obs, status, level, attempt)
    if obs.spec.suspend:
        _suspended(status)
    elif obs.spec.queue_name:
        _queued(obs, status, None)
    else:
        # The Created condition's event says it (and a retry's Retrying event): one event, not two.
        status.set_phase(PENDING, f"Job {job_name} created, waiting for its pods", announce=False)
        status.set_condition(SCHEDULABLE, "Unknown", "Scheduling", "waiting for the scheduler")
        status.set_condition(RUNNING_CONDITION, "False", "PodsPending", f"0/{obs.spec.resources.nodes} pods running")
    status.set_condition(STALLED, "False", "NotRunning", "not running")


def _observe_job(obs: Observation, status: StatusBuilder, decision: Decision, attempt: int, job: Obj) -> None:
    job_name = job["metadata"]["name"]
    status.fields["jobName"] = job_name
    status.set_condition(CREATED, "True", "JobCreated", f"created Job {job_name} (attempt {attempt})")

    if done := (true(job, "SuccessCriteriaMet") or true(job, "Complete")):
        completed = (job.get("status") or {}).get("completionTime") or done.get("lastTransitionTime")
        status.fields["completionTime"] = completed or format_time(obs.now)
        status.set_condition(RUNNING_CONDITION, "False", "Completed", "the driver (index 0) finished")
        status.set_condition(STALLED, "False", "NotRunning", "not running")
        status.set_condition(COMPLETE, "True", "JobSucceeded", f"Job {job_name} succeeded (attempt {attempt})")
        status.set_phase(SUCCEEDED, f"training finished (attempt {attempt})")
        return
    if failed := (true(job, "FailureTarget") or true(job, "Failed")):
        reason = failed.get("reason") or "Failed"
        message = failed.get("message") or ""
        _attempt_failed(obs, status, decision, attempt, job, reason, message)
        return

    level = _job_gang_level(obs.spec, job)
    _set_gang(obs, status, level, attempt)
    retry_at = parse_time(status.fields.get("gangRetryAt"))
    held_back = level == GANG_OPERATOR and retry_at is not None and obs.now < retry_at
    if held_back:
        decision.due_at(retry_at)
    patch = _job_spec_drift(obs.spec, job, held_back)
    if patch:
        decision.actions.append(PatchJob(job_name, patch))
    suspended = patch.get("suspend", (job.get("spec") or {}).get("suspend", False))
    if patch.get("suspend") is False and retry_at is not None:
        status.fields["gangRetryAt"] = None
        decision.events.append(
            Event(
                "Normal",
                "PlacingAgain",
                f"placing all {obs.spec.resources.nodes} pods of Job {job_name} again "
                f"(after release {status.fields.get('gangReleases') or 0})",
            )
        )
    if obs.spec.suspend:
        _suspended(status)
    elif suspended and level == GANG_OPERATOR:
        _released(obs, status, decision, job)
    elif suspended:
        _queued(obs, status, obs.workload)
    else:
        _observe_pods(obs, status, decision, job, level)


def _job_spec_drift(spec: TrainingSpec, job: Obj, held_back: bool = False) -> Obj:
    """The Job's mutable fields that no longer match the spec (suspend, TTL). Under Kueue the
    operator only ever suspends; unsuspending is Kueue's admission. A group the guard released
    stays suspended until its retry time (`held_back`)."""
    current = job.get("spec") or {}
    patch: Obj = {}
    if spec.suspend and not current.get("suspend"):
        patch["suspend"] = True
    elif not spec.suspend and current.get("suspend") and not spec.queue_name and not held_back:
        patch["suspend"] = False
    if spec.ttl_seconds_after_finished != current.get("ttlSecondsAfterFinished"):
        patch["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return patch


def _suspended(status: StatusBuilder) -> None:
    status.set_phase(SUSPENDED, "spec.suspend is true: pods removed, checkpoints kept")
    status.set_condition(RUNNING_CONDITION, "False", "Suspended", "suspended by spec.suspend")
    status.set_condition(STALLED, "False", "NotRunning", "not running")


def _queued(obs: Observation, status: StatusBuilder, workload: Obj | None) -> None:
    queue = obs.spec.queue_name
    reason, message = "WaitingForKueue", f"waiting for Kueue to admit the Job from LocalQueue {queue!r}"
    if workload is not None:
        pending = condition(workload, "QuotaReserved") or condition(workload, "Admitted")
        if pending and pending.get("status") != "True":
            reason = pending.get("reason") or reason
            message = f"Kueue (LocalQueue {queue!r}): {pending.get('message') or reason}"
    status.set_phase(QUEUED, message)
    status.set_condition(SCHEDULABLE, "False", reason, message)
    status.set_condition(RUNNING_CONDITION, "False", "Queued", "queued in Kueue")
    status.set_condition(STALLED, "False", "NotRunning", "not running")


def _released(obs: Observation, status: StatusBuilder, decision: Decision, job: Obj) -> None:
    """The guard suspended the Job to free the GPUs of a partial placement; it waits for its retry
    (unsuspending is `_job_spec_drift`'s), within pendingTimeoutSeconds of the attempt's start."""
    nodes = obs.spec.resources.nodes
    waited = (obs.now - (parse_time(job["metadata"].get("creationTimestamp")) or obs.now)).total_seconds()
    timeout = obs.spec.pending_timeout_seconds
    said = (status.condition(SCHEDULABLE) or {}).get("message") or "partly placed"
    if timeout:
        decision.due_at(obs.now + timedelta(seconds=timeout - waited))
    if timeout and waited > timeout:
        decision.actions.append(DeleteJob(job["metadata"]["name"]))
        _fail(
            status,
            PENDING_TIMEOUT,
            f"the {nodes} pods were never placed together in {waited:.0f}s (pendingTimeoutSeconds={timeout}): {said}",
        )
        return
    retry_at = status.fields.get("gangRetryAt")
    when = f"at {retry_at}" if retry_at else "now"
    status.set_phase(PENDING, f"partial placement released; placing all {nodes} pods again {when}")
    status.set_condition(RUNNING_CONDITION, "False", "Released", f"0/{nodes} pods: GPUs released, retrying {when}")
    status.set_condition(STALLED, "False", "NotRunning", "not running")


UNSCHEDULABLE = "Unschedulable"


def _scheduler_says(obs: Observation, job: Obj, unschedulable: list[Obj]) -> tuple[str, str]:
    """The reason and message of Schedulable=False: the scheduler's verdict on the whole PodGroup
    when there is one, beside what its pods say (each message once), made specific by the
    reference check (`references.explain`)."""
    group = next((g for g in obs.pod_groups if g["metadata"]["name"] == job["metadata"]["name"]), None)
    verdict = condition(group, POD_GROUP_SCHEDULED) if group else None
    said = []
    group_said = verdict.get("message") if verdict and verdict.get("status") == "False" else None
    if group_said:
        said.append(f"PodGroup {group['metadata']['name']}: {group_said}")
    said += [m for m in pod_status.scheduler_messages(unschedulable) if not (group_said and m.startswith(group_said))]
    reason, said = references.explain(said, obs.problems(), UNSCHEDULABLE)
    return reason, "; ".join(said) or "waiting for the scheduler"


def _backoff_seconds(obs: Observation, releases: int) -> float:
    """gangTimeoutSeconds × 2^(releases-1), capped, stretched by up to half by a hash of the
    training and release (deterministic: a repeated pass decides the same)."""
    base = min(obs.spec.gang_timeout_seconds * 2 ** min(releases - 1, 16), MAX_GANG_BACKOFF_SECONDS)
    digest = hashlib.sha256(f"{obs.namespace}/{obs.name}/{releases}".encode()).digest()
    return round(base * (1 + digest[0] / 510), 1)


def _partial_hold(obs: Observation, status: StatusBuilder, decision: Decision, job: Obj, live: list[Obj]) -> bool:
    """The guard (level Operator): some but not all pods placed for gangTimeoutSeconds, so those
    hold GPUs they cannot use. Suspend the Job (its pods go, the attempt stays) and retry later."""
    nodes, timeout = obs.spec.resources.nodes, obs.spec.gang_timeout_seconds
    placed = [p for p in live if (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp")]
    if not timeout or not 0 < len(placed) < nodes:
        return False
    since = min(
        parse_time((condition(p, "PodScheduled") or {}).get("lastTransitionTime"))
        or parse_time((p.get("status") or {}).get("startTime"))
        or obs.now
        for p in placed
    )
    held = (obs.now - since).total_seconds()
    if held < timeout:
        decision.due_at(since + timedelta(seconds=timeout))
        return False
    unschedulable = pod_status.unplaced(live)
    releases = int(status.fields.get("gangReleases") or 0) + 1
    delay = _backoff_seconds(obs, releases)
    retry_at = obs.now + timedelta(seconds=delay)
    job_name = job["metadata"]["name"]
    on = ", ".join(sorted(p["spec"]["nodeName"] for p in placed))
    message = (
        f"{len(placed)}/{nodes} pods placed (on {on}) for {held:.0f}s (gangTimeoutSeconds={timeout}), the rest not: "
        f"{_scheduler_says(obs, job, unschedulable)[1]}; released their GPUs (Job {job_name} suspended) and placing "
        f"all {nodes} again in {delay:.0f}s (release {releases})"
    )
    decision.actions.append(PatchJob(job_name, {"suspend": True}))
    decision.events.append(Event("Warning", PARTIALLY_PLACED, message))
    status.fields.update(gangReleases=releases, gangRetryAt=format_time(retry_at))
    status.set_condition(SCHEDULABLE, "False", PARTIALLY_PLACED, message)
    status.set_condition(RUNNING_CONDITION, "False", "Released", f"0/{nodes} pods: GPUs released")
    status.set_condition(STALLED, "False", "NotRunning", "not running")
    status.set_phase(PENDING, f"partial placement released; placing all {nodes} pods again in {delay:.0f}s")
    return True


def _observe_pods(obs: Observation, status: StatusBuilder, decision: Decision, job: Obj, level: str) -> None:
    nodes = obs.spec.resources.nodes
    if status.phase == RUNNING and (lost := _lost_pod(obs, status)):
        # The Job replaces a disrupted pod (its podFailurePolicy ignores disruptions), but a group
        # that ran together cannot take a new member: the others would wait for the old one forever.
        attempt = status.fields["attempt"]
        _attempt_failed(obs, status, decision, attempt, job, POD_LOST, lost)
        if status.phase == FAILED:  # no retry left: the rest of the group must not keep its GPUs
            decision.actions.append(DeleteJob(job["metadata"]["name"]))
        return
    ended = [p for p in obs.pods if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
    if ended and status.phase == RUNNING:
        return  # a pod of the running group ended: the Job's verdict (success, failure) follows at once
    live = [p for p in obs.pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
    running = [p for p in live if p["status"]["phase"] == "Running"]
    unschedulable = pod_status.unplaced(live)
    if level == GANG_OPERATOR and _partial_hold(obs, status, decision, job, live):
        return

    if unschedulable:
        reason, scheduler_says = _scheduler_says(obs, job, unschedulable)
        since = min(
            parse_time(condition(p, "PodScheduled").get("lastTransitionTime")) or obs.now for p in unschedulable
        )
        if status.fields.get("gangReleases"):  # the wait began before the guard's first release
            since = min(since, parse_time(job["metadata"].get("creationTimestamp")) or since)
        waited = (obs.now - since).total_seconds()
        timeout = obs.spec.pending_timeout_seconds
        if timeout:
            decision.due_at(since + timedelta(seconds=timeout))
        if timeout and waited > timeout:
            message = f"pods unschedulable for {waited:.0f}s (pendingTimeoutSeconds={timeout}): {scheduler_says}"
            decision.actions.append(DeleteJob(job["metadata"]["name"]))
            _fail(status, PENDING_TIMEOUT, message)
            return
        loud = "" if timeout else " (pendingTimeoutSeconds is 0: waiting indefinitely)"
        gang = f" (all-or-nothing: none of the {nodes} pods holds a GPU)" if level == GANG_POD_GROUP else ""
        status.set_condition(
            SCHEDULABLE, "False", reason, f"{len(unschedulable)}/{nodes} pods: {scheduler_says}{gang}{loud}", warn=True
        )
    elif len(live) >= nodes and all((condition(p, "PodScheduled") or {}).get("status") == "True" for p in live):
        placed = ", ".join(sorted(p["spec"].get("nodeName", "?") for p in live))
        status.set_condition(SCHEDULABLE, "True", "Scheduled", f"{len(live)}/{nodes} pods scheduled on {placed}")

    if len(running) >= nodes:
        if status.phase != RUNNING:
            created = parse_time(job["metadata"].get("creationTimestamp")) or obs.now
            decision.pending_seconds = max(0.0, (obs.now - created).total_seconds())
        status.fields.setdefault("startTime", format_time(obs.now))
        status.set_condition(RUNNING_CONDITION, "True", "PodsRunning", f"{len(running)}/{nodes} pods running")
        status.set_phase(RUNNING, f"all {nodes} pods running (attempt {status.fields['attempt']})")
        _stall_check(obs, status)
    elif stuck := pod_status.stuck(live):
        # Placed, but a container cannot start: a missing Secret or key, an image that cannot be pulled.
        said = f"{len(running)}/{nodes} pods running; {stuck.describe()}"
        status.set_condition(RUNNING_CONDITION, "False", stuck.reason, said, warn=True)
        status.set_condition(STALLED, "False", "NotRunning", "not running")
        status.set_phase(PENDING, said)
    else:
        status.set_condition(RUNNING_CONDITION, "False", "PodsPending", f"{len(running)}/{nodes} pods running")
        status.set_condition(STALLED, "False", "NotRunning", "not running")
        status.set_phase(PENDING, f"{len(running)}/{nodes} pods running")


def _lost_pod(obs: Observation, status: StatusBuilder) -> str | None:
    """How the running group lost a member, if it did: a pod marked for disruption (its node gone,
    an eviction, a preemption), or one the Job created after the group started running (the
    operator missed the disruption, e.g. it was down)."""
    for pod in obs.pods:
        if disrupted := true(pod, "DisruptionTarget"):
            node = pod["spec"].get("nodeName", "?")
            why = f"{disrupted.get('reason') or 'DisruptionTarget'}: {disrupted.get('message') or ''}".rstrip(": ")
            return f"pod {pod['metadata']['name']} on node {node} was lost ({why})"
    since = parse_time((status.condition(RUNNING_CONDITION) or {}).get("lastTransitionTime"))
    for pod in obs.pods:
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        if since and created and created > since:
            return f"pod {pod['metadata']['name']} replaced a member of the running group after it started"
    return None


def _stall_check(obs: Observation, status: StatusBuilder) -> None:
    timeout = obs.spec.stall_timeout_seconds
    running_since = parse_time(status.condition(RUNNING_CONDITION)["lastTransitionTime"]) or obs.now
    progress = obs.status.get("progress") or {}
    reported = parse_time(progress.get("updatedAt"))
    last = max(running_since, reported) if reported else running_since
    quiet = (obs.now - last).total_seconds()
    if timeout and quiet > timeout:
        step = progress.get("step")
        where = f"step {step}" if step is not None else "no step reported"
        status.set_condition(
            STALLED,
            "True",
            "NoProgress",
            f"{where}; no progress for {quiet:.0f}s (stallTimeoutSeconds={timeout})",
            warn=True,
        )
    else:
        status.set_condition(STALLED, "False", "Progressing", "progress within stallTimeoutSeconds")


def _attempt_failed(
    obs: Observation,
    status: StatusBuilder,
    decision: Decision,
    attempt: int,
    job: Obj | None,
    reason: str,
    message: str,
) -> None:
    job_name = names.job(obs.name, attempt)
    exit_code, pod_detail = _trainer_exit(obs.pods)
    detail = f"{message}{'; ' + pod_detail if pod_detail else ''}"
    if reason == "PodFailurePolicy" or exit_code == contract.EXIT_CONFIG_ERROR:
        _fail(status, CONFIG_ERROR, f"configuration error, not retried (the same spec fails again): {detail}")
        return
    if reason == DEADLINE_EXCEEDED:
        limit = obs.spec.active_deadline_seconds
        _fail(status, DEADLINE_EXCEEDED, f"ran longer than activeDeadlineSeconds={limit}: {detail}")
        return
    retries = attempt - 1
    if retries >= obs.spec.max_retries:
        _fail(
            status,
            BACKOFF_LIMIT_EXCEEDED,
            f"attempt {attempt} failed and all {obs.spec.max_retries} retries are used: {detail}",
        )
        return
    nxt = attempt + 1
    checkpoint = (obs.status.get("checkpoint") or {}).get("step")
    resume = f"resuming from the checkpoint of step {checkpoint}" if checkpoint is not None else "from the start"
    if job is not None:
        decision.actions.append(DeleteJob(job_name))
    status.fields["attempt"] = nxt
    decision.retried = True
    status.set_condition(
        RETRIED, "True", reason, f"attempt {attempt} failed: {detail}; attempt {nxt} {resume}", announce=False
    )
    decision.events.append(
        Event("Warning", "Retrying", f"attempt {attempt} failed ({reason}: {detail}); starting attempt {nxt}, {resume}")
    )
    _create_attempt(obs, status, decision, nxt)


def _trainer_exit(pods: list[Obj]) -> tuple[int | None, str]:
    """Exit code and a description of the failed trainer container that explains the attempt: one
    that exited with a configuration error (a worker whose node failed the preflight, while the
    head was only stopped by the Job), else the first by index (driver first)."""
    ordered = sorted(pods, key=lambda p: int((p["metadata"].get("annotations") or {}).get(_INDEX_ANNOTATION, "0")))
    failed = []
    for pod in ordered:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if container.get("name") == contract.CONTAINER_NAME and terminated.get("exitCode", 0) != 0:
                failed.append((pod, terminated))
    if not failed:
        return None, ""
    pod, terminated = next((f for f in failed if f[1]["exitCode"] == contract.EXIT_CONFIG_ERROR), failed[0])
    code = terminated["exitCode"]
    said = f": {terminated['message'].strip()}" if terminated.get("message") else ""
    why = terminated.get("reason") or "Error"
    return code, f"pod {pod['metadata']['name']} exited {code} ({why}){said}"


_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _fail(status: StatusBuilder, reason: str, message: str) -> None:
    status.set_condition(RUNNING_CONDITION, "False", reason, message)
    status.set_condition(STALLED, "False", "NotRunning", "not running")
    status.set_condition(FAILED_CONDITION, "True", reason, message, warn=True)
    status.set_phase(FAILED, f"{reason}: {message}")


def _pod_gpu_interval(pod: Obj) -> tuple[datetime, datetime | None] | None:
    """When the pod held its GPUs: from the kubelet starting it (image pulls included; the GPUs
    are allocated by then) to its trainer's end, None while it still holds them."""
    state = pod.get("status") or {}
    start = parse_time(state.get("startTime"))
    if start is None:
        return None
    end = None
    for container in state.get("containerStatuses") or []:
        if container.get("name") == contract.CONTAINER_NAME:
            end = parse_time(((container.get("state") or {}).get("terminated") or {}).get("finishedAt"))
    if end is None and state.get("phase") in ("Succeeded", "Failed"):
        end = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime")) or start
    return start, end


def _holds_gpus(pod: Obj) -> bool:
    interval = _pod_gpu_interval(pod)
    return interval is not None and interval[1] is None


def _whole_group_seconds(obs: Observation, since: datetime | None, until: datetime) -> float:
    """Seconds between `since` and `until` during which at least `nodes` of the observed pods held
    their GPUs at once: the time the whole group ran. A partial placement (pods waiting for the
    rest, at the guard's level) is not work, and is not counted."""
    steps = []
    for pod in obs.pods:
        interval = _pod_gpu_interval(pod)
        if interval is not None:
            start, end = max(interval[0], since) if since else interval[0], min(interval[1] or obs.now, until)
            if end > start:
                steps += [(start, 1), (end, -1)]
    together, running, began = 0.0, 0, None
    for moment, step in sorted(steps, key=lambda s: (s[0], s[1])):  # an end before a start at the same time
        running += step
        if running >= obs.spec.resources.nodes and began is None:
            began = moment
        elif running < obs.spec.resources.nodes and began is not None:
            together += (moment - began).total_seconds()
            began = None
    return together


def _account_gpu_seconds(obs: Observation, status: StatusBuilder) -> None:
    """Add the GPU time of the whole group since the last accounting. Pods of earlier attempts
    were counted while they lived, so the total covers every attempt without keeping their pods."""
    since = parse_time(obs.status.get("gpuSecondsUpdatedAt"))
    until = obs.now.replace(microsecond=0)  # the stored boundary has whole seconds: count each second once
    added = obs.spec.total_gpus * _whole_group_seconds(obs, since, until)
    if not added and "gpuSeconds" in obs.status:
        return  # nothing to count: no status write just to move the boundary (a pending training's passes)
    status.fields["gpuSeconds"] = round(float(obs.status.get("gpuSeconds") or 0) + added, 1)
    status.fields["gpuSecondsUpdatedAt"] = format_time(until)
