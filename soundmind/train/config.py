"""The trainer's input: the TrainingSpec file the operator mounts, and the pod's identity from env.

`dump_spec` renders the ConfigMap's `training.yaml` (the operator calls it) and `load_spec` reads it
back in the pod, so the format has one owner. `load_spec` reads a file as `kubectl apply` sends it to
the API server: a document that starts with `{` is JSON (kubectl's YAML-or-JSON decoder decides the
same way), anything else YAML, with numbers as YAML 1.2 writes them (`3e-7` is a float; PyYAML's
YAML 1.1 resolver wants a dot and would read a string).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pydantic
import yaml

from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.errors import ConfigError
from soundmind.names import safe_name
from soundmind.train import contract


def dump_spec(spec: TrainingSpec) -> str:
    """The `training.yaml` content: the spec exactly as the API server stores it."""
    return yaml.safe_dump(spec.to_api(), sort_keys=False)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2's float syntax: an exponent without a dot (`3e-7`, `1E5`)."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def _parse_document(text: str, path: Path) -> object:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                "--config", f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader with one more resolver
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None


def load_spec(path: str | Path) -> TrainingSpec:
    """The spec in a YAML or JSON file: the spec section itself (what the operator mounts) or a whole
    SoundMindTraining manifest (what a user has at hand), whose `.spec` is taken."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "--config", f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    data = _parse_document(text, path)
    if isinstance(data, dict) and data.get("kind") == TRAINING.kind:
        data = data.get("spec")
    elif isinstance(data, dict) and "kind" in data and "apiVersion" in data:
        raise ConfigError("--config", f"{path} holds a {data['kind']!r}, not a {TRAINING.kind} or its spec")
    return parse_spec(data if data is not None else {})


def parse_spec(data: object) -> TrainingSpec:
    """A TrainingSpec from its wire form; a ConfigError naming the first invalid field and listing
    every other one."""
    try:
        return TrainingSpec.from_api(data)
    except pydantic.ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
        (field, first), others = problems[0], problems[1:]
        listed = "".join(f"\n  and {where}: {what}" for where, what in others)
        raise ConfigError(field, first + listed) from None


def _problem(error: dict) -> tuple[str, str]:
    field = ".".join(str(part) for part in error["loc"]) or "spec"
    value = f" (got {error['input']!r:.80})" if "input" in error and error["loc"] else ""
    return field, f"{error['msg']}{value}"


@dataclass(frozen=True)
class PodIdentity:
    """Who this pod is, from the environment the operator sets (contract.ENV_*)."""

    training_name: str
    namespace: str
    attempt: int
    index: int  # JOB_COMPLETION_INDEX: 0 is the Ray head and the verl driver
    head_address: str  # where workers reach index 0

    @property
    def is_head(self) -> bool:
        return self.index == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, default_name: str | None = None) -> PodIdentity:
        """`default_name` stands in for an unset training name (a dry run on a laptop)."""
        env = os.environ if env is None else env

        def number(name: str, default: str, minimum: int) -> int:
            text = env.get(name, default)
            try:
                value = int(text)
            except ValueError:
                value = minimum - 1
            if value < minimum:
                raise ConfigError(f"env {name}", f"must be an integer >= {minimum}, got {text!r}")
            return value

        name = env.get(contract.ENV_TRAINING_NAME, "") or default_name or ""
        if not name:
            raise ConfigError(f"env {contract.ENV_TRAINING_NAME}", "must name the SoundMindTraining of this pod")
        try:
            safe_name(name, "the training name")  # it names the checkpoint directory
        except ValueError as exc:
            raise ConfigError(f"env {contract.ENV_TRAINING_NAME}", str(exc)) from None
        return cls(
            training_name=name,
            namespace=env.get(contract.ENV_NAMESPACE, "default"),
            attempt=number(contract.ENV_ATTEMPT, "1", 1),
            index=number(contract.ENV_JOB_INDEX, "0", 0),
            head_address=env.get(contract.ENV_HEAD_ADDRESS, "127.0.0.1"),
        )
