"""The trainer's input: the TrainingSpec file the operator mounts, and the pod's identity from env.

`dump_spec` renders the ConfigMap's `training.yaml` (the operator calls it) and `load_spec` reads it
back in the pod, so the format has one owner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pydantic
import yaml

from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind.train.errors import ConfigError


def dump_spec(spec: TrainingSpec) -> str:
    """The `training.yaml` content: the spec exactly as the API server stores it."""
    return yaml.safe_dump(spec.to_api(), sort_keys=False)


def load_spec(path: str | Path) -> TrainingSpec:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from None
    return parse_spec(data if data is not None else {})


def parse_spec(data: object) -> TrainingSpec:
    """A TrainingSpec from its wire form; the first invalid field becomes a ConfigError naming it."""
    try:
        return TrainingSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "spec"
        value = f" (got {first['input']!r:.80})" if "input" in first and first["loc"] else ""
        more = f"; and {exc.error_count() - 1} more error(s)" if exc.error_count() > 1 else ""
        raise ConfigError(field, f"{first['msg']}{value}{more}") from None


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
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodIdentity:
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

        name = env.get(contract.ENV_TRAINING_NAME, "")
        if not name:
            raise ConfigError(f"env {contract.ENV_TRAINING_NAME}", "must name the SoundMindTraining of this pod")
        return cls(
            training_name=name,
            namespace=env.get(contract.ENV_NAMESPACE, "default"),
            attempt=number(contract.ENV_ATTEMPT, "1", 1),
            index=number(contract.ENV_JOB_INDEX, "0", 0),
            head_address=env.get(contract.ENV_HEAD_ADDRESS, "127.0.0.1"),
        )
