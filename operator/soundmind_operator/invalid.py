"""The start of every kind's pass: the object's spec as its API model, or, for a spec the CRD let
through but the model refuses (a CRD older than the operator, say), the object marked Failed,
naming the field, with nothing else touched."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic

from soundmind.api.base import GROUP, VERSION, ResourceKind
from soundmind_operator.conditions import Event, format_time
from soundmind_operator.kube import Kube, Manifest
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
    message = f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
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
