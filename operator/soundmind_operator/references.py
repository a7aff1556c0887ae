"""What a spec refers to that the operator can check itself, before or instead of the scheduler:
the PersistentVolumeClaims it mounts exist and are bound, and some node offers its GPU resource,
in the number each pod asks for, with its node selector's labels. Pure functions of views that the
watches keep (PVCs and nodes, read-only; the operator never reads Secrets, so a missing token
Secret is left to the pods' `CreateContainerConfigError`, see `pod_status`).

A problem is advisory: children are still applied, because a node pool that scales up for a
pending pod (cluster-autoscaler, Karpenter) offers no GPU until a pod waits for one, and a claim
whose StorageClass binds on first use stays Pending until a pod using it is scheduled. That is
also why a Pending claim is said, but not warned about: only a missing or lost claim and a
placement that no node can offer are warnings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind_operator.cached import cached
from soundmind_operator.conditions import StatusBuilder

Obj = dict[str, Any]

# The condition (the name Gateway API gives the same check of an object's references).
RESOLVED_REFS = "ResolvedRefs"
# Its reasons, worst first: the condition carries the first one that applies.
CLAIM_NOT_FOUND, CLAIM_LOST, NO_MATCHING_NODE, CLAIM_NOT_BOUND, RESOLVED = (
    "ClaimNotFound",
    "ClaimLost",
    "NoMatchingNode",
    "ClaimNotBound",
    "Resolved",
)
_SEVERITY = (CLAIM_NOT_FOUND, CLAIM_LOST, NO_MATCHING_NODE, CLAIM_NOT_BOUND)

# The key all nodes are indexed under (the check looks at all of them at once).
ALL_NODES = "nodes"


@dataclass(frozen=True)
class ClaimView:
    """What the check needs of a PersistentVolumeClaim."""

    phase: str  # Pending | Bound | Lost


@dataclass(frozen=True)
class NodeView:
    """What the check needs of a node: its labels, what it can allocate, whether it takes pods."""

    name: str
    labels: tuple[tuple[str, str], ...]
    allocatable: tuple[tuple[str, str], ...]
    schedulable: bool = True


def claim_view(body: Mapping[str, Any]) -> ClaimView:
    return ClaimView(phase=(body.get("status") or {}).get("phase") or "Pending")


def node_view(body: Mapping[str, Any]) -> NodeView:
    return NodeView(
        name=(body.get("metadata") or {}).get("name", ""),
        labels=tuple(sorted(((body.get("metadata") or {}).get("labels") or {}).items())),
        allocatable=tuple(sorted(((body.get("status") or {}).get("allocatable") or {}).items())),
        schedulable=not (body.get("spec") or {}).get("unschedulable", False),
    )


@dataclass(frozen=True)
class NodeNeeds:
    """What a pod of the object asks of a node, and how many pods need one each."""

    gpu_resource: str
    gpus: int  # per pod
    gpus_field: str  # the spec field that asks for them
    pods: int  # pods that each need their own node (a multi-node training's group); 1 otherwise
    node_selector: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Needs:
    claims: tuple[tuple[str, str], ...]  # (spec field, claim name)
    nodes: NodeNeeds


def training_needs(spec: TrainingSpec) -> Needs:
    storage, resources = spec.storage, spec.resources
    return Needs(
        claims=(
            ("spec.storage.checkpoints.claimName", storage.checkpoints.claim_name),
            ("spec.storage.data.claimName", storage.data.claim_name),
            ("spec.storage.models.claimName", storage.models.claim_name),
        ),
        nodes=NodeNeeds(
            resources.gpu_resource,
            resources.gpus_per_node,
            "spec.resources.gpusPerNode",
            resources.nodes,
            tuple(sorted(resources.node_selector.items())),
        ),
    )


def serving_needs(spec: ServingSpec) -> Needs:
    gpus_field = "spec.resources.gpus" if spec.resources.gpus is not None else "spec.vllm.tensorParallelSize"
    return Needs(
        claims=(("spec.storage.models.claimName", spec.storage.models.claim_name),),
        nodes=NodeNeeds(
            spec.resources.gpu_resource, spec.gpus, gpus_field, 1, tuple(sorted(spec.resources.node_selector.items()))
        ),
    )


_NEEDS = {TRAINING.kind: (TrainingSpec, training_needs), SERVING.kind: (ServingSpec, serving_needs)}


def needs_of(kind: str, spec: Mapping[str, Any]) -> Needs | None:
    """The needs of an object's raw spec (for the watches' handlers, which see it unchecked);
    None for a spec its model refuses (its pass marks the object Failed)."""
    return _needs_of(kind, json.dumps(dict(spec), sort_keys=True))


@cached(maxsize=4096)
def _needs_of(kind: str, spec_json: str) -> Needs | None:
    model, needs = _NEEDS[kind]
    try:
        return needs(model.model_validate_json(spec_json))
    except pydantic.ValidationError:
        return None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    warn: bool = True
    note: str = ""  # said in ResolvedRefs, in parentheses, not where the scheduler's words explain it

    @property
    def text(self) -> str:
        return f"{self.message} ({self.note})" if self.note else self.message


def claim_problems(namespace: str, needs: Needs, claims: Mapping[str, ClaimView]) -> list[Problem]:
    """`claims`: the named claims that exist, by name."""
    problems = []
    for spec_field, name in needs.claims:
        found = claims.get(name)
        if found is None:
            problems.append(
                Problem(CLAIM_NOT_FOUND, f'{spec_field}: PersistentVolumeClaim "{name}" not found in {namespace}')
            )
        elif found.phase == "Lost":
            problems.append(
                Problem(CLAIM_LOST, f'{spec_field}: PersistentVolumeClaim "{name}" is Lost (its volume is gone)')
            )
        elif found.phase != "Bound":
            problems.append(
                Problem(
                    CLAIM_NOT_BOUND,
                    f'{spec_field}: PersistentVolumeClaim "{name}" is {found.phase}, not bound to a volume',
                    warn=False,
                    note="normal until the first pod is scheduled when its StorageClass binds on first use",
                )
            )
    return problems


def _selector_text(selector: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{key}={value}" for key, value in selector)


def _quantity(text: str) -> int:
    """An extended resource's count (whole numbers; a GPU is never fractional)."""
    try:
        return int(text)
    except ValueError:
        return 0


def node_problem(needs: NodeNeeds, nodes: Sequence[NodeView]) -> Problem | None:
    """Why no node (no `needs.pods` nodes) could ever hold the pods, counting what nodes can
    allocate, not what is free now: that is the scheduler's to say. No nodes at all: nothing to
    say (the node watch has not delivered any)."""
    if not nodes:
        return None
    selector = dict(needs.node_selector)
    matching = [
        n for n in nodes if n.schedulable and all(dict(n.labels).get(key) == value for key, value in selector.items())
    ]
    labels = _selector_text(needs.node_selector)
    if not matching and not selector:
        return Problem(NO_MATCHING_NODE, "no node takes pods: every node is cordoned (spec.unschedulable)")
    if not matching:
        return Problem(NO_MATCHING_NODE, f"spec.resources.nodeSelector: no schedulable node has the labels {labels}")
    labelled = f" matching spec.resources.nodeSelector ({labels})" if selector else ""
    offered = {n.name: _quantity(dict(n.allocatable).get(needs.gpu_resource, "0")) for n in matching}
    if not any(offered.values()):
        return Problem(NO_MATCHING_NODE, f"spec.resources.gpuResource: no node{labelled} offers {needs.gpu_resource}")
    enough = sorted(name for name, count in offered.items() if count >= needs.gpus)
    if not enough:
        return Problem(
            NO_MATCHING_NODE,
            f"{needs.gpus_field}: {needs.gpus} {needs.gpu_resource} per pod, but no node{labelled} offers that many "
            f"(at most {max(offered.values())})",
        )
    if len(enough) < needs.pods:
        return Problem(
            NO_MATCHING_NODE,
            f"spec.resources.nodes: {needs.pods} pods need a node each with {needs.gpus} {needs.gpu_resource}, "
            f"but only {len(enough)} node(s){labelled} offer that many ({', '.join(enough)})",
        )
    return None


def users(namespace: str, name: str, needs: Needs | None) -> dict[tuple, str | tuple[str, str]]:
    """An object's entries in its kind's index of references, which route the claims' and nodes'
    watch events to the objects they concern: ("claim", namespace, claim) -> its name, and
    ("nodes", its NodeNeeds) -> (namespace, name)."""
    if needs is None:
        return {}
    entries: dict[tuple, str | tuple[str, str]] = {("claim", namespace, claim): name for _, claim in needs.claims}
    entries[("nodes", needs.nodes)] = (namespace, name)
    return entries


@dataclass(frozen=True)
class Seen:
    """What the watches show of an object's references, copied for one pass. `claims` None: not
    looked at (the check of claims is skipped)."""

    claims: Mapping[str, ClaimView] | None = None
    nodes: tuple[NodeView, ...] = ()


def problems(namespace: str, needs: Needs, seen: Seen) -> list[Problem]:
    found = claim_problems(namespace, needs, seen.claims) if seen.claims is not None else []
    if (placement := node_problem(needs.nodes, seen.nodes)) is not None:
        found.append(placement)
    return sorted(found, key=lambda p: _SEVERITY.index(p.reason))


def set_condition(status: StatusBuilder, found: Sequence[Problem]) -> None:
    """ResolvedRefs: True, or False with the worst problem's reason and every problem's message;
    a warning (an event when it first appears or its reason changes) unless all are only Pending claims."""
    if not found:
        # Only a recovery is news: a new object whose references resolve is not worth an event.
        recovered = (status.condition(RESOLVED_REFS) or {}).get("status") == "False"
        message = "the claims the spec names are bound and nodes offer what its pods ask for"
        status.set_condition(RESOLVED_REFS, "True", RESOLVED, message, announce=recovered)
        return
    message = "; ".join(p.text for p in found)
    status.set_condition(RESOLVED_REFS, "False", found[0].reason, message, warn=any(p.warn for p in found))


# The scheduler's wrapping of a plugin's own error: it names the plugin, not the object it missed,
# e.g. `error in "DynamicResources" PodGroupPostFilter plugins: not found` for a missing claim.
_OPAQUE = re.compile(r'error in "[^"]+" \w+ plugins?:')


def opaque(message: str) -> bool:
    return bool(_OPAQUE.search(message))


def explain(said: Sequence[str], found: Sequence[Problem], reason: str) -> tuple[str, list[str]]:
    """The scheduler's messages `said` and the reason to give them (`reason`, its own), made as
    specific as the check allows: the worst problem the check found, when it is a certain one
    (not a Pending claim), is the reason and comes first, in place of the messages that name only
    a scheduler plugin (kept in parentheses); the scheduler's other messages follow. A Pending
    claim counts as the cause only where a message names only a plugin."""
    hidden = [m for m in said if opaque(m)]
    cause = next((p for p in found if p.warn), None)
    if cause is None and hidden:
        # A Pending claim is normal while its StorageClass waits for the first pod, but not once the
        # scheduler has failed in a plugin: the claim is then the one cause the operator can name.
        cause = next((p for p in found if p.reason == CLAIM_NOT_BOUND), None)
    if cause is None:
        return reason, list(said)
    first = f"{cause.message} (the scheduler says: {'; '.join(hidden)})" if hidden else cause.message
    return cause.reason, [first, *(m for m in said if not opaque(m))]


@dataclass
class NodeVerdicts:
    """Each node's last view and each node requirement's last verdict, so that a node's watch
    event wakes only the objects whose verdict it changes: a heartbeat (status but not labels or
    allocatable) wakes none, and a new node wakes only objects no node could hold before."""

    views: dict[str, NodeView] = field(default_factory=dict)
    verdicts: dict[NodeNeeds, str | None] = field(default_factory=dict)

    def seen(self, name: str, view: NodeView | None) -> bool:
        """Record a node's view (None: deleted); whether it changed."""
        if self.views.get(name) == view:
            return False
        if view is None:
            self.views.pop(name, None)
        else:
            self.views[name] = view
        return True

    def changed(self, wanted: Iterable[NodeNeeds]) -> set[NodeNeeds]:
        """The requirements among `wanted` (every object's) whose verdict over the recorded nodes
        changed; the verdicts of requirements no object has any more are forgotten."""
        nodes = tuple(self.views.values())
        before, self.verdicts = self.verdicts, {}
        for needs in set(wanted):
            verdict = node_problem(needs, nodes)
            self.verdicts[needs] = verdict.message if verdict else None
        return {needs for needs, text in self.verdicts.items() if before.get(needs) != text}
