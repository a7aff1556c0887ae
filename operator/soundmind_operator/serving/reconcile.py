"""One reconcile pass of a SoundMindServing: read, decide (pure), apply, write status.

Blocking; the loop runs it in a worker thread. The Deployment, its pods, the autoscaler and the
other children come from the watches (`cache.Owned`), as do the claims and nodes its spec refers
to; the training a `fromTraining` serving serves from comes from the trainings' index. Children
are server-side applied when missing or out of date, and those the spec no longer asks for (a
PDB once at most one replica may run, the autoscaler once autoscaling is off) are deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import kopf

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import CheckpointStorageSpec
from soundmind.errors import ConfigError
from soundmind.serve.render import checked_arguments
from soundmind_operator import children, invalid, metrics, references
from soundmind_operator.cache import Owned
from soundmind_operator.cached import cached
from soundmind_operator.kube import Invalid, Kube, Manifest
from soundmind_operator.loop import Outcome
from soundmind_operator.serving import builders, names, observe

# Children a serving may have besides the Deployment and Service, by kind (all named after it).
OPTIONAL_CHILDREN = {
    "PodDisruptionBudget": names.disruption_budget,
    "HorizontalPodAutoscaler": names.autoscaler,
    "ScaledObject": names.autoscaler,
    "ServiceMonitor": names.service_monitor,
}
API_VERSIONS = {
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "ScaledObject": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
# A model path that stands in while a training has not exported yet: extraArgs are checked anyway.
PENDING_MODEL = "/models/pending"


@cached(maxsize=1024)
def _config_error(spec_json: str, model: str) -> str | None:
    try:
        checked_arguments(ServingSpec.model_validate_json(spec_json), model)
    except ConfigError as error:
        return str(error)
    return None


@cached(maxsize=4096)
def _desired_children(
    serving: str,
    namespace: str,
    spec_json: str,
    model: builders.ModelSource,
    platform: builders.Platform,
    rollout: str,
) -> tuple[Manifest, ...]:
    """The stamped children (see `children`): pure in these inputs."""
    spec = ServingSpec.model_validate_json(spec_json)
    return children.stamp_all(builders.build_children(serving, namespace, spec, model, platform, rollout))


@dataclass
class Pass:
    phase: str | None
    desired: int
    ready: int
    least: int
    most: int


@dataclass
class ServingCache:
    owned: Owned
    training: observe.TrainingView | None  # of spec.fromTraining, from the trainings' index
    seen: references.Seen = references.Seen()  # the claims and nodes its spec refers to


@dataclass
class ServingReconciler:
    kube: Kube
    metrics: metrics.OperatorMetrics
    platform: builders.Platform
    kind: str = SERVING.kind

    def reconcile(self, body: Manifest, cache: ServingCache, logger: logging.Logger) -> Outcome:
        kube = self.kube
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        spec = invalid.spec_or_outcome(kube, SERVING, body, ServingSpec, observe.CONFIG_ERROR)
        if isinstance(spec, Outcome):
            return spec
        status = body.get("status") or {}

        owned = cache.owned
        deployments = owned.of("Deployment")
        hpa_name = f"keda-hpa-{names.autoscaler(name)}" if self.platform.keda else names.autoscaler(name)
        spec_json = spec.model_dump_json()
        model_hint = spec.model or (cache.training.model_path if cache.training else None) or PENDING_MODEL
        generation = body["metadata"].get("generation", 1)
        model = observe.resolve_model(spec, namespace, cache.training)[0]
        plan = children.Plan()
        if model is not None:
            rollout = (body["metadata"].get("annotations") or {}).get(children.ROLLOUT_ANNOTATION, "")
            plan = children.plan(
                _desired_children(name, namespace, spec_json, model, self.platform, rollout),
                owned.by_key(),
                spec_reconciled=status.get("observedGeneration") == generation,
            )
        obs = observe.Observation(
            name=name,
            namespace=namespace,
            generation=generation,
            spec=spec,
            status=status,
            now=datetime.now(UTC),
            platform=self.platform,
            training=cache.training if spec.from_training else None,
            config_error=_config_error(spec_json, model_hint),
            deployment=next((d for d in deployments if d["metadata"]["name"] == names.deployment(name)), None),
            pods=owned.of("Pod"),
            hpa=next((h for h in owned.of("HorizontalPodAutoscaler") if h["metadata"]["name"] == hpa_name), None),
            seen=cache.seen,
            plan=plan,
        )
        decision = observe.decide(obs)
        if decision.model is not None:
            try:
                self._apply(body, plan, owned, logger)
            except Invalid as refused:
                return invalid.refused_child(kube, SERVING, body, refused, observe.CONFIG_ERROR)
        patch = decision.status_patch(status)
        written = None
        if patch:
            written = kube.patch_custom_status(
                GROUP, VERSION, namespace, SERVING.plural, name, body["metadata"]["resourceVersion"], patch
            )["metadata"]["resourceVersion"]
        result = decision.status
        return Outcome(
            body=body,
            events=decision.events,
            written_version=written,
            detail=Pass(
                result.get("phase"),
                observe.desired_replicas(obs),
                result.get("readyReplicas") or 0,
                builders.min_replicas(spec),
                builders.max_replicas(spec),
            ),
        )

    def _apply(self, body: Manifest, plan: children.Plan, owned: Owned, logger) -> None:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        stale = list(plan.apply)
        kopf.adopt(stale, owner=body)
        for child in stale:
            self.kube.apply(namespace, child)
        present = owned.by_key()
        optional = [(kind, make(name)) for kind, make in OPTIONAL_CHILDREN.items()]
        unwanted = [key for key in optional if key in present and key not in plan.wanted]
        for kind, child in unwanted:
            self.kube.delete(API_VERSIONS[kind], kind, namespace, child)
        changed = [f"applied {c['kind']}/{c['metadata']['name']}" for c in stale]
        changed += [f"deleted {kind}/{child}" for kind, child in unwanted]
        if changed:
            logger.info("%s", ", ".join(changed))

    def fetch(self, namespace: str, name: str) -> Manifest | None:
        return self.kube.get_custom(GROUP, VERSION, namespace, SERVING.plural, name)

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        done: Pass | None = outcome.detail
        if done is not None:
            self.metrics.observe_serving(
                namespace,
                name,
                phase=done.phase,
                desired=done.desired,
                ready=done.ready,
                least=done.least,
                most=done.most,
            )

    def forget(self, namespace: str, name: str) -> None:
        self.metrics.forget_serving(namespace, name)


def training_view(body) -> observe.TrainingView:
    """What the trainings' index keeps of a training, for the servings that serve from it."""
    status = body.get("status") or {}
    model = status.get("model") or {}
    storage = ((body.get("spec") or {}).get("storage") or {}).get("checkpoints") or {}
    return observe.TrainingView(
        phase=status.get("phase"),
        model_path=model.get("path"),
        model_step=model.get("step"),
        checkpoints_claim=storage.get("claimName") or CheckpointStorageSpec().claim_name,
    )
