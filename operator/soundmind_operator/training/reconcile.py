"""One reconcile pass of a SoundMindTraining: read, decide (pure), act, write status.

Blocking (the synchronous Kubernetes client): the daemon runs it in a worker thread. Everything
here is repeatable: children have deterministic names and "already exists" is success, Jobs are
found by label, and the status patch is refused (Conflict) if the training changed since it was
read, so two passes can never both add the same GPU-seconds or retry the same attempt twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import pydantic
from kubernetes.client.rest import ApiException

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TrainingSpec
from soundmind.train.contract import TRAINING_PLURAL
from soundmind_operator.kube import Kube, Manifest
from soundmind_operator.training import builders, names, observe

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSIONS = ("v1beta2", "v1beta1")  # newest first; v1beta1 is what Kueue before 0.15 serves
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


@dataclass
class Outcome:
    """What a pass saw and did: the training (for events), its decision, and what it created."""

    body: Manifest | None  # None: the training is gone or being deleted
    decision: observe.Decision | None = None
    spec: TrainingSpec | None = None
    created: list[str] = field(default_factory=list)

    @property
    def events(self) -> list[observe.Event]:
        return self.decision.events if self.decision else []


def reconcile(kube: Kube, namespace: str, name: str, logger: logging.Logger | None = None) -> Outcome:
    logger = logger or logging.getLogger(__name__)
    body = kube.get_custom(GROUP, VERSION, namespace, TRAINING_PLURAL, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return Outcome(body=None)
    status = body.get("status") or {}
    try:
        spec = TrainingSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        return _invalid_spec(kube, body, error)

    attempt = status.get("attempt") or 1
    jobs = kube.list_dicts(kube.batch.list_namespaced_job, namespace, label_selector=names.selector(name))
    job_name = names.job(name, attempt)
    pods = kube.list_dicts(kube.core.list_namespaced_pod, namespace, label_selector=names.pod_selector(job_name))
    job = next((j for j in jobs if j["metadata"]["name"] == job_name), None)
    workload = _kueue_workload(kube, namespace, job) if spec.queue_name and job is not None else None

    decision = observe.decide(
        observe.Observation(
            name=name,
            namespace=namespace,
            generation=body["metadata"].get("generation", 1),
            spec=spec,
            status=status,
            now=datetime.now(UTC),
            jobs=jobs,
            pods=pods,
            workload=workload,
        )
    )
    outcome = Outcome(body=body, decision=decision, spec=spec)
    for action in decision.actions:
        _act(kube, body, spec, action, outcome, logger)
    patch = decision.status_patch(status)
    if patch:
        kube.patch_custom_status(
            GROUP, VERSION, namespace, TRAINING_PLURAL, name, body["metadata"]["resourceVersion"], patch
        )
    return outcome


def _act(kube: Kube, body: Manifest, spec: TrainingSpec, action: observe.Action, outcome: Outcome, logger) -> None:
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    match action:
        case observe.CreateAttempt(attempt=attempt, active_deadline_seconds=deadline):
            children = builders.build_children(name, spec)
            children.append(
                builders.build_job(name, namespace, spec, attempt, active_deadline_seconds=deadline)
            )  # last: its pods mount the ConfigMap and use the ServiceAccount
            kopf.adopt(children, owner=body)
            for child in children:
                if kube.create(namespace, child):
                    outcome.created.append(f"{child['kind']}/{child['metadata']['name']}")
            if outcome.created:
                logger.info("created %s", ", ".join(outcome.created))
        case observe.DeleteJob(name=job_name):
            if kube.delete_job(namespace, job_name):
                logger.info("deleted Job %s", job_name)
        case observe.PatchJob(name=job_name, spec=patch):
            kube.patch_job_spec(namespace, job_name, patch)
            logger.info("patched Job %s: %s", job_name, patch)


def _kueue_workload(kube: Kube, namespace: str, job: Manifest) -> Manifest | None:
    """Kueue's Workload for the Job (its conditions say why it is not admitted), if Kueue is there."""
    selector = f"{KUEUE_JOB_UID_LABEL}={job['metadata']['uid']}"
    for version in KUEUE_VERSIONS:
        try:
            items = kube.list_dicts(
                kube.custom.list_namespaced_custom_object,
                KUEUE_GROUP,
                version,
                namespace,
                "workloads",
                label_selector=selector,
            )
        except ApiException as error:
            if error.status == 404:  # this version (or Kueue) is not installed
                continue
            raise
        return items[0] if items else None
    return None


def _invalid_spec(kube: Kube, body: Manifest, error: pydantic.ValidationError) -> Outcome:
    """A spec the CRD let through but the model refuses (an older CRD): fail loudly, touch nothing."""
    first = error.errors()[0]
    where = "spec." + ".".join(str(p) for p in first["loc"])
    message = f"{where}: {first['msg']}"
    now = observe.format_time(datetime.now(UTC))
    status = body.get("status") or {}
    if status.get("phase") == observe.FAILED:
        return Outcome(body=body)
    generation = body["metadata"].get("generation", 1)
    condition = {
        "type": observe.FAILED_CONDITION,
        "status": "True",
        "reason": "InvalidSpec",
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": generation,
    }
    patch: dict[str, Any] = {"phase": observe.FAILED, "conditions": [condition], "observedGeneration": generation}
    meta = body["metadata"]
    kube.patch_custom_status(
        GROUP, VERSION, meta["namespace"], TRAINING_PLURAL, meta["name"], meta["resourceVersion"], patch
    )
    decision = observe.Decision(status=patch, events=[observe.Event("Warning", "InvalidSpec", message)])
    return Outcome(body=body, decision=decision)
