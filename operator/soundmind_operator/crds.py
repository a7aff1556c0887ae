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
import pathlib
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import MUTABLE_SPEC_FIELDS, TRAINING_SPEC_RULES, TrainingSpec, TrainingStatus
from soundmind_operator.training.names import MAX_TRAINING_NAME_LENGTH, TRAINING_NAME_PATTERN

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
    status = structural_schema(TrainingStatus)
    # kopf keeps its own bookkeeping under status; without this the API server would prune it.
    status["x-kubernetes-preserve-unknown-fields"] = True
    columns = [
        ("Phase", "string", ".status.phase", "Lifecycle phase"),
        ("Step", "integer", ".status.progress.step", "Last completed GRPO step"),
        ("Reward", "number", ".status.progress.rewardMean", "Mean reward of the last step"),
        ("Val-Acc", "number", ".status.progress.valAccuracy", "Last validation accuracy"),
        ("Age", "date", ".metadata.creationTimestamp", None),
    ]
    # The Job, its pods' host names and the headless Service are named after the training.
    name_rules = [
        {
            "rule": f"self.metadata.name.size() <= {MAX_TRAINING_NAME_LENGTH}",
            "message": f"metadata.name must be at most {MAX_TRAINING_NAME_LENGTH} characters: the Job and pod "
            "host names derived from it must fit in 63",
        },
        {
            "rule": f"self.metadata.name.matches('{TRAINING_NAME_PATTERN}')",
            "message": "metadata.name must start with a letter and hold only lower-case letters, digits and '-' "
            "(it names the training's headless Service)",
        },
    ]
    return _crd(
        kind="SoundMindTraining",
        plural="soundmindtrainings",
        short="smt",
        description="A SoundMind-RL GRPO training run of an audio-language model on GPU nodes.",
        spec=spec,
        status=status,
        columns=columns,
        rules=name_rules,
    )


def _crd(*, kind, plural, short, description, spec, status, columns, scale=None, rules=None) -> dict[str, Any]:
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = scale
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "soundmind", "app.kubernetes.io/part-of": "soundmind"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
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
    crds = [training_crd()]
    return {f"{GROUP}_{c['spec']['names']['plural']}.yaml": c for c in crds}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `python -m soundmind_operator.crds --write` from soundmind.api; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the SoundMind CRDs.")
    parser.add_argument("--write", action="store_true", help=f"write them into {CRD_DIR}")
    args = parser.parse_args(argv)
    for name, crd in all_crds().items():
        if args.write:
            CRD_DIR.mkdir(parents=True, exist_ok=True)
            (CRD_DIR / name).write_text(render(crd))
            print(f"wrote {CRD_DIR / name}")
        else:
            sys.stdout.write("---\n" + render(crd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
