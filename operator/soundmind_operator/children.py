"""Desired children against observed ones: what a pass must (re-)apply, and what it holds back.

Each child the operator applies carries the hash of the manifest it was built from. The watches
keep every child in kopf indices, so a pass knows without any API call which desired children are
missing (deleted by someone) or stale (the spec or the operator's builders changed), and applies
only those. Applying is server-side apply, so a stale read costs at most one redundant, harmless
apply.

A stale child that holds a pod template (a serving's Deployment) is different: applying a new
template replaces every pod, and a vLLM replica costs minutes of weight loading and spare GPUs for
the surge. So its builder also stamps what the pods are built *from*: the spec's part that shapes
them and the kind's pod template version, a constant a developer bumps only for a change that must
reach running pods (`POD_INPUTS_ANNOTATION`). The policy:

- those inputs changed (the spec, the model, the user's rollout annotation, a bumped version):
  the child is applied as built, and its pods roll;
- they did not (only the operator's builders changed: a new operator version): the child is
  applied with the pod template it already runs, so its other fields are updated in place and no
  pod restarts; the newer template is *held* until the inputs change, which the kind reports;
- a child without a pod template is always applied as built (Services, PDBs, autoscalers,
  ServiceMonitors, RBAC, ConfigMaps).

The stamped desired children are a pure function of what they are built from, so each kind keeps
them in a memo keyed by those inputs (`cached`): a resync pass over an unchanged object
builds and hashes nothing (building a training's rendered config was a third of an idle pass).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from soundmind.api.base import GROUP

Manifest = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)

HASH_ANNOTATION = f"{GROUP}/applied-hash"  # the whole manifest as built
# "<pod template version>/<hash of what the spec asks of the pods>", set by the child's builder.
POD_INPUTS_ANNOTATION = f"{GROUP}/pod-inputs"
POD_TEMPLATE_ANNOTATION = f"{GROUP}/pod-template"  # the pod template the child runs, as built
# The condition saying whether a kind's pods run the template this operator builds (False:
# OPERATOR_CHANGE_HELD, an earlier operator's template is kept until the pods are made again).
POD_TEMPLATE_CURRENT = "PodTemplateCurrent"
OPERATOR_CHANGE_HELD = "OperatorChangeHeld"
# On a custom resource: a new value rolls its pods onto the operator's current template (it is one of
# the pod inputs). `kubectl annotate sms NAME soundmind.ai/rollout="$(date +%s)" --overwrite`
ROLLOUT_ANNOTATION = f"{GROUP}/rollout"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _annotations(body: Mapping[str, Any]) -> Mapping[str, str]:
    return (body.get("metadata") or {}).get("annotations") or {}


def _pod_template(manifest: Mapping[str, Any]) -> Manifest | None:
    return (manifest.get("spec") or {}).get("template")


def pod_template_hash(manifest: Mapping[str, Any]) -> str:
    """The hash of a child's pod template as built (`POD_TEMPLATE_ANNOTATION`'s value)."""
    return _digest(_pod_template(manifest))


def pod_inputs(version: int, inputs: Any) -> str:
    """The value of `POD_INPUTS_ANNOTATION`: a builder's pod template version and the hash of the
    JSON-able `inputs` its pod template is a function of."""
    return f"{version}/{_digest(inputs)}"


def template_version(stamp: str) -> int | None:
    """The pod template version in a `pod_inputs` stamp (None: none, or not one of ours)."""
    head = stamp.partition("/")[0]
    return int(head) if head.isdigit() else None


def stamped(manifest: Manifest) -> Manifest:
    """The manifest with the hash of its own content in an annotation, and, for a child with a pod
    template, the hash of that template."""
    template = _pod_template(manifest)
    if template is not None and POD_INPUTS_ANNOTATION not in _annotations(manifest):
        raise ValueError(
            f"{manifest['kind']} {manifest['metadata']['name']}: a child with a pod template needs the "
            f"{POD_INPUTS_ANNOTATION} annotation from its builder (children.pod_inputs), or every operator "
            "upgrade would restart its pods"
        )
    out = copy.deepcopy(manifest)
    annotations = out["metadata"].setdefault("annotations", {})
    if template is not None:
        annotations[POD_TEMPLATE_ANNOTATION] = pod_template_hash(manifest)
    annotations[HASH_ANNOTATION] = _digest(out)
    return out


def applied_hash(body: Mapping[str, Any]) -> str:
    return _annotations(body).get(HASH_ANNOTATION, "")


def stamp_all(manifests: Iterable[Manifest]) -> tuple[Manifest, ...]:
    return tuple(stamped(manifest) for manifest in manifests)


@dataclass(frozen=True)
class Rolled:
    """A child whose pods roll because its kind's pod template version was bumped."""

    name: str
    before: int
    after: int


@dataclass(frozen=True)
class Plan:
    wanted: frozenset[ChildKey] = frozenset()  # every desired child
    apply: tuple[Manifest, ...] = ()  # copies (the caller's to adopt and apply), in desired order
    held: tuple[str, ...] = ()  # children whose pods keep an older template than the operator builds
    rolled: tuple[Rolled, ...] = ()  # children whose pods roll for a bumped template version


def plan(desired: Iterable[Manifest], observed: Mapping[ChildKey, Manifest], *, spec_reconciled: bool = True) -> Plan:
    """What to apply of the stamped `desired` children, given the `observed` ones by (kind, name).

    `spec_reconciled`: whether the object's current spec has been reconciled before (its status'
    observedGeneration is its generation). It decides for a child that an operator older than this
    policy applied (no pod inputs stamped) and built otherwise than this one would: its template is
    held if the spec has not changed since, and rolled if it has.
    """
    desired = tuple(desired)
    apply: list[Manifest] = []
    held: list[str] = []
    rolled: list[Rolled] = []
    for child in desired:
        key = (child["kind"], child["metadata"]["name"])
        found = observed.get(key)
        if found is None or _pod_template(child) is None:
            if found is None or applied_hash(found) != applied_hash(child):
                apply.append(copy.deepcopy(child))
            continue
        ours, running = _annotations(child), _annotations(found)
        inputs, running_inputs = ours[POD_INPUTS_ANNOTATION], running.get(POD_INPUTS_ANNOTATION)
        running_template = running.get(POD_TEMPLATE_ANNOTATION, "")
        if running_inputs is None and applied_hash(found) == _pre_policy_hash(child):
            running_inputs, running_template = inputs, ours[POD_TEMPLATE_ANNOTATION]  # built as we build it
        if inputs != running_inputs and (running_inputs is not None or not spec_reconciled):
            # The spec asks for other pods, or the template version was bumped: they roll.
            apply.append(copy.deepcopy(child))
            before, after = template_version(running_inputs or ""), template_version(inputs)
            if before is not None and after is not None and before != after:
                rolled.append(Rolled(key[1], before, after))
            continue
        holding = running_template != ours[POD_TEMPLATE_ANNOTATION]
        if holding:
            held.append(key[1])
        if applied_hash(found) != applied_hash(child):
            apply.append(_keeping_pods(child, found, running_template) if holding else copy.deepcopy(child))
    wanted = frozenset((child["kind"], child["metadata"]["name"]) for child in desired)
    return Plan(wanted, tuple(apply), tuple(held), tuple(rolled))


def _pre_policy_hash(child: Manifest) -> str:
    """The applied hash an operator older than this policy gave a manifest built as `child` is,
    which carried no other annotations: a child it applied with this hash runs our template."""
    unstamped = copy.deepcopy(child)
    annotations = unstamped["metadata"].pop("annotations", {})
    rest = {
        k: v
        for k, v in annotations.items()
        if k not in (HASH_ANNOTATION, POD_INPUTS_ANNOTATION, POD_TEMPLATE_ANNOTATION)
    }
    if rest:
        unstamped["metadata"]["annotations"] = rest
    return _digest(unstamped)


def _keeping_pods(child: Manifest, found: Mapping[str, Any], running_template: str) -> Manifest:
    """`child` with the pod template `found` runs, and that template's stamp."""
    out = copy.deepcopy(child)
    out["spec"]["template"] = copy.deepcopy(found["spec"]["template"])
    out["metadata"]["annotations"][POD_TEMPLATE_ANNOTATION] = running_template
    return out
