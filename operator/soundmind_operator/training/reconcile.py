"""One reconcile pass of a SoundMindTraining: read, decide (pure), act, write status.

Blocking (the synchronous Kubernetes client): the loop runs it in a worker thread. The training's
Jobs, pods and other children come from the watches (kopf indices, read on the event loop into a
`cache.Owned`), not from LIST calls, and so do the claims and nodes its spec refers to (a
`references.Seen`). Everything here is repeatable: children have deterministic
names and are server-side applied, a Job that exists is not created again, and the status patch is
refused (Conflict) if the training changed since it was read, so two passes can never both add the
same GPU-seconds or retry the same attempt twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import kopf

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.errors import ConfigError
from soundmind.train.render import validate_overrides
from soundmind_operator import children, invalid, metrics, references
from soundmind_operator.cache import Owned
from soundmind_operator.cached import cached
from soundmind_operator.kube import Invalid, Kube, Manifest
from soundmind_operator.loop import Outcome
from soundmind_operator.training import builders, names, observe

KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
POD_GROUP_API = ("scheduling.k8s.io", "v1beta1", "podgroups")  # Kubernetes' gang scheduling


@dataclass
class Pass:
    """The kind's record of a pass, for its metrics."""

    spec: TrainingSpec
    status: Manifest  # the operator's status fields after the pass
    retried: bool = False
    pending_seconds: float | None = None


@cached(maxsize=1024)
def _config_error(spec_json: str) -> str | None:
    """The verl command the pods would run, checked against verl's schema (cached per spec: the
    check composes the whole config, tens of milliseconds; a burst of like trainings pays once)."""
    try:
        validate_overrides(TrainingSpec.model_validate_json(spec_json))
    except ConfigError as error:
        return str(error)
    return None


def warm_up() -> None:
    """Check a default spec once, at start-up: the first check also loads verl's config schema and
    Hydra's override parser, which would otherwise hold the GIL in a burst's first passes."""
    _config_error(TrainingSpec.model_validate({"image": "warm-up"}).model_dump_json())


@cached(maxsize=4096)
def _desired_children(training: str, spec_json: str) -> tuple[Manifest, ...]:
    """Everything but the Job, stamped (see `children`): pure in the name and the spec."""
    return children.stamp_all(builders.build_children(training, TrainingSpec.model_validate_json(spec_json)))


@cached(maxsize=4096)
def _job_template(training: str, namespace: str, spec_json: str, attempt: int, pod_group: bool) -> str:
    """The hash of the pod template this operator builds for an attempt's Job (pure in its inputs;
    a deadline is the Job's, not its pods')."""
    spec = TrainingSpec.model_validate_json(spec_json)
    return children.pod_template_hash(builders.build_job(training, namespace, spec, attempt, pod_group=pod_group))


@dataclass
class TrainingCache:
    owned: Owned  # the training's children
    seen: references.Seen = references.Seen()  # the claims and nodes its spec refers to


@dataclass
class TrainingReconciler:
    kube: Kube
    metrics: metrics.OperatorMetrics
    kueue_version: str | None = None  # Kueue's served API version, found once at start-up
    pod_group_api: bool = False  # whether the cluster serves PodGroups, found once at start-up
    kind: str = TRAINING.kind

    def reconcile(self, body: Manifest, read: TrainingCache, logger: logging.Logger) -> Outcome:
        kube = self.kube
        cache = read.owned
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        spec = invalid.spec_or_outcome(kube, TRAINING, body, TrainingSpec, observe.FAILED_CONDITION)
        if isinstance(spec, Outcome):
            return spec
        status = body.get("status") or {}
        if status.get("phase") in observe.TERMINAL_PHASES:  # nothing changes a finished training
            return Outcome(body=body, settled=True, detail=Pass(spec, status))

        spec_json = spec.model_dump_json()
        attempt = status.get("attempt") or 1
        job_name = names.job(name, attempt)
        jobs = list(cache.of("Job"))
        if status.get("jobName") == job_name and not any(j["metadata"]["name"] == job_name for j in jobs):
            # The watch may not have delivered a Job created a moment ago: ask before calling it deleted.
            found = kube.get("batch/v1", "Job", namespace, job_name)
            jobs += [found] if found else []
        pods = [p for p in cache.of("Pod") if (p["metadata"].get("labels") or {}).get(names.JOB_NAME_LABEL) == job_name]
        job = next((j for j in jobs if j["metadata"]["name"] == job_name), None)
        workload = self._kueue_workload(namespace, job) if spec.queue_name and job is not None else None
        job_template = None
        if job is not None:
            joins_group = bool(job["spec"]["template"]["spec"].get("schedulingGroup"))
            job_template = _job_template(name, namespace, spec_json, attempt, joins_group)

        now = datetime.now(UTC)
        decision = observe.decide(
            observe.Observation(
                name=name,
                namespace=namespace,
                generation=body["metadata"].get("generation", 1),
                spec=spec,
                status=status,
                now=now,
                jobs=jobs,
                pods=pods,
                workload=workload,
                job_template=job_template,
                pod_group_api=self.pod_group_api,
                pod_groups=list(cache.of("PodGroup")),
                config_error=None if job else _config_error(spec_json),
                seen=read.seen,
            )
        )
        try:
            if decision.status.get("phase") not in observe.TERMINAL_PHASES:
                self._apply_children(body, spec_json, cache, logger)
            for action in decision.actions:
                self._act(body, spec, action, logger)
        except Invalid as refused:
            return invalid.refused_child(kube, TRAINING, body, refused, observe.FAILED_CONDITION)
        patch = decision.status_patch(status)
        written = None
        if patch:
            written = kube.patch_custom_status(
                GROUP, VERSION, namespace, TRAINING.plural, name, body["metadata"]["resourceVersion"], patch
            )["metadata"]["resourceVersion"]
        return Outcome(
            body=body,
            events=decision.events,
            written_version=written,
            settled=decision.status.get("phase") in observe.TERMINAL_PHASES,
            periodic=decision.periodic,
            recheck_after=(decision.due - now).total_seconds() if decision.due else None,
            detail=Pass(spec, decision.status, decision.retried, decision.pending_seconds),
        )

    def _apply_children(self, body: Manifest, spec_json: str, cache: Owned, logger) -> None:
        """Everything but the Job, (re-)applied when missing or out of date: none of them holds a
        pod template (a Job's is fixed for its attempt, and a new operator's reaches the next one)."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        stale = children.plan(_desired_children(name, spec_json), cache.by_key()).apply
        kopf.adopt(stale, owner=body)
        for child in stale:
            self.kube.apply(namespace, child)
        if stale:
            logger.info("applied %s", ", ".join(f"{c['kind']}/{c['metadata']['name']}" for c in stale))

    def _act(self, body: Manifest, spec: TrainingSpec, action: observe.Action, logger) -> None:
        kube = self.kube
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        match action:
            case observe.CreateAttempt(attempt=attempt, active_deadline_seconds=deadline, pod_group=pod_group):
                if pod_group:  # before the Job, so its pods find their group at once
                    group = builders.build_pod_group(name, spec, attempt)
                    kopf.adopt(group, owner=body)
                    kube.apply(namespace, group)
                job = builders.build_job(
                    name, namespace, spec, attempt, active_deadline_seconds=deadline, pod_group=pod_group
                )
                kopf.adopt(job, owner=body)
                if kube.create(namespace, job):
                    logger.info("created Job %s", job["metadata"]["name"])
            case observe.DeleteJob(name=job_name):
                if kube.delete("batch/v1", "Job", namespace, job_name):
                    logger.info("deleted Job %s", job_name)
            case observe.DeletePodGroup(name=group):
                if kube.delete(builders.POD_GROUP_API_VERSION, "PodGroup", namespace, group):
                    logger.info("deleted PodGroup %s", group)
            case observe.PatchJob(name=job_name, spec=patch):
                kube.merge_patch("batch/v1", "Job", namespace, job_name, {"spec": patch})
                logger.info("patched Job %s: %s", job_name, patch)

    def _kueue_workload(self, namespace: str, job: Manifest) -> Manifest | None:
        """Kueue's Workload for the Job (its conditions say why it is not admitted), if Kueue is there."""
        if self.kueue_version is None:
            return None
        path = f"/apis/{KUEUE_GROUP}/{self.kueue_version}/namespaces/{namespace}/workloads"
        selector = f"{KUEUE_JOB_UID_LABEL}={job['metadata']['uid']}"
        items = self.kube.request("GET", path, query=[("labelSelector", selector)])["items"]
        return items[0] if items else None

    def fetch(self, namespace: str, name: str) -> Manifest | None:
        return self.kube.get_custom(GROUP, VERSION, namespace, TRAINING.plural, name)

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        done: Pass | None = outcome.detail
        if done is None:
            return
        spec, status = done.spec, done.status
        if done.retried:
            self.metrics.retries.labels(namespace, name).inc()
        if done.pending_seconds is not None:
            self.metrics.pending_duration.observe(done.pending_seconds)
        running = spec.total_gpus if status.get("phase") == observe.RUNNING else 0
        self.metrics.observe_training(
            namespace,
            name,
            phase=status.get("phase"),
            requested=spec.total_gpus,
            running=running,
            gpu_seconds=status.get("gpuSeconds") or 0.0,
        )

    def forget(self, namespace: str, name: str) -> None:
        self.metrics.forget_training(namespace, name)
