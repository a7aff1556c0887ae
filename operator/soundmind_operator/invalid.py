"""The start of every kind's pass: the object's spec as its API model, or, for a spec that cannot be
made, the object marked Failed, naming the field, once, instead of failing every pass in silence:
the model refuses it (a CRD older than the operator, say), or the API server refuses a child built
from it (a node selector whose key or value is no label: the CRD leaves those maps free-form)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic

from soundmind.api.base import GROUP, VERSION, ResourceKind
from soundmind_operator.conditions import Event, format_time
from soundmind_operator.kube import Invalid, Kube, Manifest
from soundmind_operator.loop import Outcome

FAILED = "Failed"  # the phase every kind uses for this
REASON = "InvalidSpec"

Spec = TypeVar("Spec", bound=pydantic.BaseModel)


def spec_or_outcome(
    kube: Kube, kind: ResourceKind, body: Manifest, model: type[Spec], condition: str
) -> Spec | Outcome:
    """`body`'s spec, or the pass's outcome when there is nothing to reconcile: the object is being
    deleted (the loop ends), or its spec is refused (see `refuse`)."""
    if body["metadata"].get("deletionTimestamp"):
        return Outcome(body=None)
    try:
        return model.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as error:
        return refuse(kube, kind, body, error, condition)


def refuse(kube: Kube, kind: ResourceKind, body: Manifest, error: pydantic.ValidationError, condition: str) -> Outcome:
    """Mark the object Failed with `condition`=True (reason InvalidSpec) once; a settled outcome."""
    first = error.errors()[0]
    return mark_failed(kube, kind, body, f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}", condition)


def refused_child(kube: Kube, kind: ResourceKind, body: Manifest, error: Invalid, condition: str) -> Outcome:
    """The same, for a child the API server refused (its message names the child's field)."""
    return mark_failed(kube, kind, body, f"the API server refused a child built from the spec: {error}", condition)


def mark_failed(kube: Kube, kind: ResourceKind, body: Manifest, message: str, condition: str) -> Outcome:
    meta = body["metadata"]
    if (body.get("status") or {}).get("phase") == FAILED:
        return Outcome(body=body, settled=True)
    generation = meta.get("generation", 1)
    entry = {
        "type": condition,
        "status": "True",
        "reason": REASON,
        "message": message,
        "lastTransitionTime": format_time(datetime.now(UTC)),
        "observedGeneration": generation,
    }
    patch: dict[str, Any] = {"phase": FAILED, "conditions": [entry], "observedGeneration": generation}
    kube.patch_custom_status(
        GROUP, VERSION, meta["namespace"], kind.plural, meta["name"], meta["resourceVersion"], patch
    )
    return Outcome(body=body, events=[Event("Warning", REASON, message)], settled=True)
