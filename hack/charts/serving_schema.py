"""The serving chart's values.schema.json: the `SoundMindServing` spec's own schema (the one the CRD
carries, from `soundmind.api.serving.ServingSpec`), made strict JSON Schema, plus the chart's keys.

So `helm install` refuses a misspelt key or an out-of-range value naming it, before the API server
would, and the chart's values cannot drift from the spec."""

from __future__ import annotations

import copy
from typing import Any

from soundmind.api.serving import ServingSpec
from soundmind_operator.crds import structural_schema
from soundmind_operator.serving.names import MAX_SERVING_NAME_LENGTH

# Values that are not spec fields.
CHART_KEYS: dict[str, Any] = {
    "name": {
        "type": "string",
        "description": "The SoundMindServing's name; default: the release name.",
        "maxLength": MAX_SERVING_NAME_LENGTH,
        "pattern": "^([a-z]([-a-z0-9]*[a-z0-9])?)?$",
    },
    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    "global": {"type": "object"},
}
# `image` may also be given in parts, as in the operator chart: the template joins them into the
# spec's string, repository@digest when a digest is set (the tag is then not used), else
# repository:tag (default tag: the chart's appVersion).
IMAGE_PARTS: dict[str, Any] = {
    "type": "object",
    "description": "The image in parts: repository, and a tag or a digest (the digest wins).",
    "additionalProperties": False,
    "required": ["repository"],
    "properties": {
        "repository": {"type": "string", "minLength": 1},
        "tag": {"type": "string"},
        "digest": {
            "type": "string",
            "pattern": "^(sha256:[a-f0-9]{64})?$",
            "description": "sha256:<64 hex digits>; when set, the image is repository@digest",
        },
    },
}


def values_schema() -> dict[str, Any]:
    spec = _strict(structural_schema(ServingSpec))
    # values.yaml leaves `model` empty so that fromTraining can be chosen instead; the template
    # refuses neither-or-both with a message.
    spec["properties"]["model"].pop("minLength")
    spec["properties"]["image"] = {"oneOf": [spec["properties"]["image"], IMAGE_PARTS]}
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "soundmind-serving values: a SoundMindServing's spec, plus name, labels and annotations",
        "type": "object",
        "additionalProperties": False,
        "properties": {**CHART_KEYS, **spec["properties"]},
    }


def _strict(node: Any) -> Any:
    """OpenAPI v3.0 (Kubernetes) to JSON Schema: no x-kubernetes-* keys, numeric exclusive bounds,
    and no unknown keys in objects that list their properties."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    for bound in ("Minimum", "Maximum"):
        if out.get(f"exclusive{bound}") is True:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
    if out.get("type") == "object" and "properties" in out:
        out.setdefault("additionalProperties", False)
    return copy.deepcopy(out)
