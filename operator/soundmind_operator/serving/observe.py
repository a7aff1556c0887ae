"""From what the cluster shows to what a serving's status should say, and whether to apply.

`decide` is a pure function of the serving (spec, generation, status), the model it resolves to
(or why it cannot), whether vLLM's parser accepts the command, its Deployment, pods and autoscaler
as the watches last saw them, the claims and nodes its spec refers to, what the platform offers,
what the pass will apply (`children.Plan`: which pod templates it holds back or rolls for the
operator), and the time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from soundmind.api.serving import ServingSpec
from soundmind_operator import children, pod_status, references
from soundmind_operator.conditions import Event, StatusBuilder, StatusShape, condition, status_patch
from soundmind_operator.serving import builders, names

Obj = dict[str, Any]

# Phases (contract).
PENDING, PROGRESSING, AVAILABLE, DEGRADED, FAILED = "Pending", "Progressing", "Available", "Degraded", "Failed"
# Condition types (contract).
AVAILABLE_CONDITION, PROGRESSING_CONDITION, SCHEDULABLE, SCALING_ACTIVE, MODEL_READY, CONFIG_ERROR = (
    "Available",
    "Progressing",
    "Schedulable",  # as a training's: whether the scheduler places the replicas, in its words
    "ScalingActive",
    "ModelReady",
    "ConfigError",
)
# Whether the replicas run the pod template this operator builds (not a contract condition).
POD_TEMPLATE_CURRENT = children.POD_TEMPLATE_CURRENT
UNSCHEDULABLE = "Unschedulable"
# ModelReady=False reasons (contract).
TRAINING_NOT_FOUND, TRAINING_NOT_FINISHED, TRAINING_FAILED = "TrainingNotFound", "TrainingNotFinished", "TrainingFailed"

OPERATOR_STATUS_FIELDS = (
    "phase",
    "conditions",
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "selector",
    "url",
    "model",
    "autoscaler",
)
SERVING_STATUS = StatusShape(
    owned_fields=OPERATOR_STATUS_FIELDS,
    condition_order=(
        AVAILABLE_CONDITION,
        PROGRESSING_CONDITION,
        SCHEDULABLE,
        references.RESOLVED_REFS,
        SCALING_ACTIVE,
        MODEL_READY,
        CONFIG_ERROR,
        POD_TEMPLATE_CURRENT,
    ),
    warning_phases=(DEGRADED, FAILED),
)


@dataclass(frozen=True)
class TrainingView:
    """What a serving needs of the training it serves from."""

    phase: str | None
    model_path: str | None  # status.model.path: the exported Hugging Face directory
    model_step: int | None
    checkpoints_claim: str  # the volume the export is on


@dataclass(frozen=True)
class Observation:
    name: str
    namespace: str
    generation: int
    spec: ServingSpec
    status: Obj
    now: datetime
    platform: builders.Platform
    training: TrainingView | None = None  # for spec.fromTraining; None when it does not exist
    config_error: str | None = None  # why vLLM's parser refuses the command, if it does
    deployment: Obj | None = None
    pods: list[Obj] = field(default_factory=list)  # the serving's pods
    hpa: Obj | None = None  # ours, or the one KEDA made for our ScaledObject
    seen: references.Seen = references.Seen()  # the claims and nodes the spec refers to
    plan: children.Plan = children.Plan()  # what the pass applies, if it applies


@dataclass
class Decision:
    status: Obj
    events: list[Event] = field(default_factory=list)
    model: builders.ModelSource | None = None  # set: apply the children for this model

    def status_patch(self, current: Obj) -> Obj:
        return status_patch(self.status, current)


def resolve_model(
    spec: ServingSpec, namespace: str, training: TrainingView | None
) -> tuple[builders.ModelSource | None, str, str]:
    """The model to serve, or None with the reason and message of ModelReady=False. `training`: the
    one `spec.fromTraining` names, None when it does not exist."""
    if spec.model is not None:
        return builders.ModelSource(spec.model), "Specified", f"serving {spec.model}"
    training_name = spec.from_training.name
    if training is None:
        return None, TRAINING_NOT_FOUND, f"SoundMindTraining {training_name!r} does not exist in {namespace}"
    if training.phase == "Failed":
        return None, TRAINING_FAILED, f"SoundMindTraining {training_name!r} failed; it has no model to serve"
    if training.phase != "Succeeded" or not training.model_path:
        said = "succeeded but has not exported a model yet" if training.phase == "Succeeded" else "not finished"
        return None, TRAINING_NOT_FINISHED, f"SoundMindTraining {training_name!r} is {said} (phase {training.phase})"
    step = f" (step {training.model_step})" if training.model_step is not None else ""
    source = builders.ModelSource(training.model_path, training.checkpoints_claim)
    return source, "TrainingExported", f"serving the model SoundMindTraining {training_name!r} exported{step}"


def decide(obs: Observation) -> Decision:
    status = StatusBuilder(SERVING_STATUS, obs.status, obs.generation, obs.now)
    status.fields["selector"] = names.selector(obs.name)
    status.fields["url"] = names.url(obs.name, obs.namespace)
    decision = Decision(status={})

    model, reason, message = resolve_model(obs.spec, obs.namespace, obs.training)
    if model is None:
        status.set_condition(MODEL_READY, "False", reason, message, warn=reason == TRAINING_FAILED)
    else:
        status.set_condition(MODEL_READY, "True", reason, message)
        status.fields["model"] = model.path

    if obs.config_error:
        status.set_condition(CONFIG_ERROR, "True", "InvalidArguments", obs.config_error, warn=True)
    else:
        status.set_condition(CONFIG_ERROR, "False", "Valid", "vLLM's argument parser accepts the command")

    problems = references.problems(obs.namespace, references.serving_needs(obs.spec), obs.seen)
    references.set_condition(status, problems)
    _scaling(obs, status)
    _replicas(obs, status)

    if obs.config_error:
        refused = f"vllm serve would refuse its arguments: {obs.config_error}"
        _not_serving(obs, status, FAILED, "ConfigError", refused, problems)
    elif model is None:
        _not_serving(obs, status, FAILED if reason == TRAINING_FAILED else PENDING, reason, message, problems)
    else:
        decision.model = model
        _rollout(obs, status, problems)
        _pod_template(obs, status)

    decision.status = status.result()
    decision.events = status.events
    return decision


def _not_serving(
    obs: Observation,
    status: StatusBuilder,
    phase: str,
    reason: str,
    message: str,
    problems: list[references.Problem],
) -> None:
    """The spec cannot be served as it is: nothing is applied. Without a Deployment that is `phase`;
    with one (an earlier, valid version keeps serving) the serving is Degraded."""
    if obs.deployment is None:
        status.set_phase(phase, message)
        status.set_condition(AVAILABLE_CONDITION, "False", reason, message)
        status.set_condition(PROGRESSING_CONDITION, "False", reason, "no Deployment is created until this is resolved")
    else:
        _rollout(obs, status, problems, set_phase=False)
        status.set_phase(DEGRADED, f"the previous version keeps serving; {message}")


def _scaling(obs: Observation, status: StatusBuilder) -> None:
    kind = builders.autoscaler_kind(obs.spec, obs.platform)
    status.fields["autoscaler"] = kind
    scaling = obs.spec.autoscaling
    if kind == builders.NO_AUTOSCALER:
        status.set_condition(
            SCALING_ACTIVE, "False", "AutoscalingDisabled", f"spec.replicas ({obs.spec.replicas}) decides"
        )
        return
    how = (
        f"{scaling.metric.value} target {scaling.target:g} per replica, {scaling.min_replicas}-{scaling.max_replicas} "
        "replicas"
    )
    if kind == builders.KEDA:
        reason, message = "KEDA", f"KEDA ScaledObject {names.autoscaler(obs.name)}: {how}"
    else:
        reason = "HPA"
        message = (
            f"HorizontalPodAutoscaler {names.autoscaler(obs.name)} on the External metric "
            f"{builders.external_metric_name(obs.spec)} (prometheus-adapter; KEDA is not installed): {how}"
        )
    hpa_active = condition(obs.hpa, "ScalingActive") if obs.hpa else None
    if hpa_active and hpa_active.get("status") == "False":
        said = hpa_active.get("message") or hpa_active.get("reason") or "inactive"
        status.set_condition(
            SCALING_ACTIVE, "False", hpa_active.get("reason") or reason, f"{message}; {said}", warn=True
        )
    else:
        status.set_condition(SCALING_ACTIVE, "True", reason, message)


def _replicas(obs: Observation, status: StatusBuilder) -> None:
    deployment_status = (obs.deployment or {}).get("status") or {}
    before = obs.status.get("replicas")
    replicas = deployment_status.get("replicas", 0)
    status.fields["replicas"] = replicas
    status.fields["readyReplicas"] = deployment_status.get("readyReplicas", 0)
    if obs.deployment is not None and before is not None and before != replicas:
        by = "the autoscaler" if status.fields["autoscaler"] != builders.NO_AUTOSCALER else "spec.replicas"
        status.events.append(Event("Normal", "Scaled", f"replicas {before} → {replicas} ({by})"))


def desired_replicas(obs: Observation) -> int:
    if obs.deployment is not None and "replicas" in (obs.deployment.get("spec") or {}):
        return obs.deployment["spec"]["replicas"]
    return builders.min_replicas(obs.spec)


def _rollout(
    obs: Observation, status: StatusBuilder, problems: list[references.Problem], *, set_phase: bool = True
) -> None:
    """Phase and the Available/Progressing/Schedulable conditions from the Deployment and its pods."""
    deployment = obs.deployment
    if deployment is None:
        status.set_condition(AVAILABLE_CONDITION, "False", "Creating", "creating the Deployment")
        status.set_condition(PROGRESSING_CONDITION, "True", "Creating", "creating the Deployment")
        if set_phase:
            status.set_phase(PROGRESSING, "creating the Deployment")
        return
    desired = desired_replicas(obs)
    state = deployment.get("status") or {}
    ready, updated = state.get("readyReplicas", 0), state.get("updatedReplicas", 0)
    current = state.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    progress = condition(deployment, "Progressing") or {}
    stuck_rollout = progress.get("status") == "False" and progress.get("reason") == "ProgressDeadlineExceeded"
    rolled_out = current and updated >= desired and ready >= desired

    if ready > 0:
        status.set_condition(AVAILABLE_CONDITION, "True", "ReplicasReady", f"{ready}/{desired} replicas ready")
    else:
        reason = "ScaledToZero" if desired == 0 else "NoReplicaReady"
        status.set_condition(AVAILABLE_CONDITION, "False", reason, f"0/{desired} replicas ready")

    unplaced = _schedulable(obs, status, desired, problems)
    broken = pod_status.stuck(obs.pods)
    if rolled_out:
        status.set_condition(PROGRESSING_CONDITION, "False", "RolloutComplete", f"{ready}/{desired} replicas ready")
    elif broken:
        status.set_condition(PROGRESSING_CONDITION, "False", broken.reason, broken.describe())
    elif unplaced:
        status.set_condition(PROGRESSING_CONDITION, "False", unplaced[0], unplaced[1])
    elif stuck_rollout:
        status.set_condition(PROGRESSING_CONDITION, "False", "ProgressDeadlineExceeded", progress.get("message", ""))
    else:
        status.set_condition(
            PROGRESSING_CONDITION, "True", "RollingOut", f"{updated}/{desired} updated, {ready}/{desired} ready"
        )
    if not set_phase:
        return
    if desired == 0:
        status.set_phase(PENDING, "scaled to 0 replicas")
    elif rolled_out:
        status.set_phase(AVAILABLE, f"{ready}/{desired} replicas serve {status.fields.get('model')}")
    elif broken:
        status.set_phase(DEGRADED, f"{ready}/{desired} replicas ready; {broken.describe()}")
    elif unplaced:
        # Nothing serves yet: Pending, as a training waiting for the scheduler; some replicas serve: Degraded.
        status.set_phase(DEGRADED if ready else PENDING, f"{ready}/{desired} replicas ready; {unplaced[1]}")
    elif stuck_rollout:
        phase = DEGRADED if ready else FAILED
        status.set_phase(phase, f"{ready}/{desired} replicas ready: {progress.get('message', '')}")
    else:
        status.set_phase(PROGRESSING, f"{updated}/{desired} replicas updated, {ready}/{desired} ready")


def _pod_template(obs: Observation, status: StatusBuilder) -> None:
    """Whether the replicas run this operator's pod template (`children`: a new operator's template
    is held until the pods roll anyway), and an event for each roll a bumped template version forces."""
    for rolled in obs.plan.rolled:
        before = "none" if rolled.before is None else rolled.before
        status.events.append(
            Event(
                "Normal",
                "PodTemplateVersion",
                f"rolling Deployment {rolled.name} onto the operator's pod template version {rolled.after} "
                f"(was {before}): a change the operator needs on running replicas",
            )
        )
    if obs.deployment is None:
        return
    name = obs.deployment["metadata"]["name"]
    held_before = (status.condition(POD_TEMPLATE_CURRENT) or {}).get("status") == "False"
    if name in obs.plan.held:
        message = (
            f"Deployment {name}'s replicas keep the pod template an earlier operator built; this operator's "
            "reaches them when the spec changes, or now with: kubectl annotate sms "
            f'{obs.name} {children.ROLLOUT_ANNOTATION}="$(date +%s)" --overwrite'
        )
        # A first False is no news to StatusBuilder; a held template is, once.
        status.set_condition(POD_TEMPLATE_CURRENT, "False", children.OPERATOR_CHANGE_HELD, message, announce=False)
        if not held_before:
            status.events.append(
                Event("Normal", children.OPERATOR_CHANGE_HELD, f"{POD_TEMPLATE_CURRENT}=False: {message}")
            )
    else:
        message = f"Deployment {name}'s pod template is the one this operator builds"
        # Only the end of a hold is news, not every new serving's first template.
        status.set_condition(POD_TEMPLATE_CURRENT, "True", "Current", message, announce=held_before)


def _schedulable(
    obs: Observation, status: StatusBuilder, desired: int, problems: list[references.Problem]
) -> tuple[str, str] | None:
    """The Schedulable condition from the replicas' pods; (reason, message) when some are not placed.
    The scheduler's words, each once, made specific by the reference check (`references.explain`)."""
    live = [p for p in obs.pods if not p["metadata"].get("deletionTimestamp")]
    unplaced = pod_status.unplaced(live)
    if unplaced:
        reason, said = references.explain(pod_status.scheduler_messages(unplaced), problems, UNSCHEDULABLE)
        message = f"{len(unplaced)}/{desired} replicas cannot be placed: {'; '.join(said)}"
        status.set_condition(SCHEDULABLE, "False", reason, message, warn=True)
        return reason, message
    # Only a recovery is news: every new serving's first placement is not worth an event.
    recovered = (status.condition(SCHEDULABLE) or {}).get("status") == "False"
    if live and all((p.get("spec") or {}).get("nodeName") for p in live):
        message = f"{len(live)}/{len(live)} replica pods placed"
        status.set_condition(SCHEDULABLE, "True", "Scheduled", message, announce=recovered)
    elif not live:
        status.set_condition(SCHEDULABLE, "Unknown", "NoPods", "no replica pods", announce=False)
    return None
