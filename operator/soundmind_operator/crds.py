"""CustomResourceDefinitions generated from the API types in `soundmind.api` (the one source of
truth). `python -m soundmind_operator.crds --write` regenerates the committed manifests; a unit
test fails when they drift from the types.

pydantic's JSON Schema is turned into a Kubernetes structural schema: references inlined, optional
fields made nullable-free (absent instead of null), defaults kept, and object fields given `{}` as
default so that their own field defaults apply when a user leaves a whole section out.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from soundmind.api.base import GROUP, VERSION, ResourceKind
from soundmind.api.serving import AUTOSCALING_RULES, SERVING, SERVING_SPEC_RULES, ServingSpec, ServingStatus
from soundmind.api.training import (
    MUTABLE_SPEC_FIELDS,
    TRAINING,
    TRAINING_SPEC_RULES,
    TrainingSpec,
    TrainingStatus,
)
from soundmind_operator.serving.names import MAX_SERVING_NAME_LENGTH
from soundmind_operator.training.names import MAX_TRAINING_NAME_LENGTH

CRD_DIR = pathlib.Path(__file__).resolve().parents[2] / "charts" / "soundmind-crds" / "templates"
CATEGORY = "soundmind"

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI v3 structural schema of a pydantic model, as Kubernetes CRDs need it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _convert(target, defs)
    if "anyOf" in node:  # Optional[X]: the API omits the field rather than storing null
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {options} in a structural schema")
        merged = {**options[0], **{k: v for k, v in node.items() if k != "anyOf"}}
        if merged.get("default", ...) is None:
            del merged["default"]
        return _convert(merged, defs)
    if "const" in node:
        node = {**node, "enum": [node.pop("const")]}
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    for bound in ("Minimum", "Maximum"):  # JSON Schema's numeric form -> OpenAPI v3.0's boolean form
        if isinstance(out.get(f"exclusive{bound}"), int | float) and not isinstance(out[f"exclusive{bound}"], bool):
            out[bound.lower()] = out.pop(f"exclusive{bound}")
            out[f"exclusive{bound}"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if node.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        if "properties" in node:
            out["properties"] = {}
            for name, sub in node["properties"].items():
                prop = out["properties"][name] = _convert(sub, defs)
                optional = "anyOf" in sub
                if not optional and prop.get("type") == "object" and "properties" in prop and "default" not in prop:
                    prop["default"] = {}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _convert(node["additionalProperties"], defs)
    if node.get("type") == "array":
        out["items"] = _convert(node.get("items", {}), defs)
    return out


def training_crd() -> dict[str, Any]:
    spec = structural_schema(TrainingSpec)
    for name, prop in spec["properties"].items():
        if name not in MUTABLE_SPEC_FIELDS:
            prop.setdefault("x-kubernetes-validations", []).append(
                {
                    "rule": "self == oldSelf",
                    "message": f"spec.{name} is immutable; only {', '.join(MUTABLE_SPEC_FIELDS)} may change "
                    "on an existing training (delete and recreate it to change anything else)",
                }
            )
    spec["x-kubernetes-validations"] = TRAINING_SPEC_RULES
    columns = [
        ("Phase", "string", ".status.phase", "Lifecycle phase"),
        ("Step", "integer", ".status.progress.step", "Last completed GRPO step"),
        ("Reward", "number", ".status.progress.rewardMean", "Mean reward of the last step"),
        ("Val-Acc", "number", ".status.progress.valAccuracy", "Last validation accuracy"),
        ("Age", "date", ".metadata.creationTimestamp", None),
    ]
    # The Job, its pods' host names and the headless Service are named after the training.
    return _crd(
        TRAINING,
        description="A SoundMind-RL GRPO training run of an audio-language model on GPU nodes.",
        spec=spec,
        status=structural_schema(TrainingStatus),
        columns=columns,
        rules=_name_rules(TRAINING, MAX_TRAINING_NAME_LENGTH, "the Job and pod host names derived from it"),
    )


def serving_crd() -> dict[str, Any]:
    spec = structural_schema(ServingSpec)
    spec["x-kubernetes-validations"] = SERVING_SPEC_RULES
    spec["properties"]["autoscaling"]["x-kubernetes-validations"] = AUTOSCALING_RULES
    columns = [
        ("Phase", "string", ".status.phase", "Pending, Progressing, Available, Degraded or Failed"),
        ("Model", "string", ".status.model", "The model being served"),
        ("Ready", "integer", ".status.readyReplicas", "Replicas answering /health"),
        ("Replicas", "integer", ".status.replicas", "Replicas of the Deployment"),
        ("URL", "string", ".status.url", "In-cluster base URL of the OpenAI-compatible API"),
        ("Age", "date", ".metadata.creationTimestamp", None),
    ]
    scale = {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    return _crd(
        SERVING,
        description="A model served by vLLM's OpenAI-compatible server with audio input, autoscaled on vLLM's load.",
        spec=spec,
        status=structural_schema(ServingStatus),
        columns=columns,
        scale=scale,
        rules=_name_rules(SERVING, MAX_SERVING_NAME_LENGTH, "the Deployment's pod names derived from it"),
    )


# Children are named after their owner, and Service names are DNS-1035 labels (start with a letter).
NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _name_rules(kind: ResourceKind, max_length: int, derived: str) -> list[dict[str, Any]]:
    """Rules on the name, checked when the object is created. They sit at the object's root, which
    every write changes (a status write too), so the API server would evaluate them on each: a
    later release that tightened one would refuse every status write to objects created before,
    and the operator could no longer report on them. A name never changes, so creation is enough
    (`optionalOldSelf`: on create `oldSelf` has no value)."""
    return [
        {
            "rule": f"oldSelf.hasValue() || self.metadata.name.size() <= {max_length}",
            "optionalOldSelf": True,
            "message": f"metadata.name must be at most {max_length} characters: {derived} must fit in 63",
        },
        {
            "rule": f"oldSelf.hasValue() || self.metadata.name.matches('{NAME_PATTERN}')",
            "optionalOldSelf": True,
            "message": "metadata.name must start with a letter and hold only lower-case letters, digits and '-' "
            f"(it names the {kind.kind}'s Service)",
        },
    ]


def _crd(kind: ResourceKind, *, description, spec, status, columns, scale=None, rules=None) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/name": "soundmind", "app.kubernetes.io/part-of": "soundmind"},
            # `helm uninstall` of the operator chart must not delete the CRDs, and with them every
            # training and serving (and, by garbage collection, their Jobs and Deployments).
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short],
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": [
                        {"name": n, "type": t, "jsonPath": p, **({"description": d} if d else {})}
                        for n, t, p, d in columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            **({"x-kubernetes-validations": rules} if rules else {}),
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD, for every kind the operator serves."""
    crds = [training_crd(), serving_crd()]
    return {f"{GROUP}_{c['spec']['names']['plural']}.yaml": c for c in crds}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `python -m soundmind_operator.crds --write` from soundmind.api; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


REFERENCE = CRD_DIR.parents[2] / "docs" / "api.md"


def reference() -> str:
    """The custom resources' reference for users, from the same schemas as the CRDs."""
    lines = [
        "# API reference: soundmind.ai/v1alpha1",
        "",
        "Generated by `python -m soundmind_operator.crds --write` from `soundmind/api` (the same schemas as",
        "the CRDs); do not edit. `kubectl explain <kind>.spec` shows the same descriptions.",
    ]
    for crd in all_crds().values():
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        lines += ["", f"## {names['kind']} (`{names['shortNames'][0]}`)", "", schema["description"], ""]
        for section in ("spec", "status"):
            lines += [f"### {section}", "", "| field | type | default | description |", "| --- | --- | --- | --- |"]
            lines += _reference_rows(schema["properties"][section], section)
            lines.append("")
        rules = [r["message"] for r in schema["properties"]["spec"].get("x-kubernetes-validations", [])]
        if rules:
            lines += ["Cross-field rules (refused at admission):", "", *(f"- {rule}" for rule in rules), ""]
    return "\n".join(lines).rstrip() + "\n"


def _reference_rows(node: dict[str, Any], path: str) -> list[str]:
    rows = []
    for name, prop in (node.get("properties") or {}).items():
        where = f"{path}.{name}"
        kind = prop.get("type", "")
        if kind == "array":
            kind = f"[]{prop.get('items', {}).get('type', '')}"
        if "enum" in prop:
            kind += " (" + " \\| ".join(str(v) for v in prop["enum"]) + ")"
        default = prop.get("default")
        shown = "" if default is None or default == {} else f"`{json.dumps(default)}`"
        description = (prop.get("description") or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{where}` | {kind} | {shown} | {description} |")
        if prop.get("type") == "object" and "properties" in prop:
            rows += _reference_rows(prop, where)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the SoundMind CRDs and their reference.")
    parser.add_argument("--write", action="store_true", help=f"write them into {CRD_DIR} and {REFERENCE}")
    args = parser.parse_args(argv)
    for name, crd in all_crds().items():
        if args.write:
            CRD_DIR.mkdir(parents=True, exist_ok=True)
            (CRD_DIR / name).write_text(render(crd))
            print(f"wrote {CRD_DIR / name}")
        else:
            sys.stdout.write("---\n" + render(crd))
    if args.write:
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(reference())
        print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
