"""Checks verl overrides against verl 0.9.1's config schema, which soundmind ships.

verl's `main_ppo` composes `ppo_trainer.yaml` with Hydra; the wheel also ships the flattened result,
`verl/trainer/config/_generated_ppo_trainer.yaml`. A copy of that file, generated from the pinned
wheel, sits beside this module (`verl_ppo_trainer.yaml`; ``python -m soundmind.train.verl_config
--write``; a unit test fails when it no longer matches the installed verl), so the operator checks a
training's overrides with no verl installed (`pip install '.[operator]'`), and the trainer checks them
against the very same file. We give each scalar default a typed node so OmegaConf rejects
`trainer.nnodes=abc`, and apply the overrides with Hydra's own parser and override logic in struct
mode, so an unknown key fails exactly as it would in verl, but before any GPU is allocated.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

VERL_DISTRIBUTION = "verl"
VERL_VERSION = "0.9.1"  # the version whose schema we validate against (pyproject's `train` extra pins it)
GENERATED_CONFIG = "verl/trainer/config/_generated_ppo_trainer.yaml"
SCHEMA_FILE = Path(__file__).with_name("verl_ppo_trainer.yaml")
GENERATE = "python -m soundmind.train.verl_config --write"

_TYPED_NODES = {bool: BooleanNode, int: IntegerNode, float: FloatNode, str: StringNode}


class OverrideError(ValueError):
    def __init__(self, override: str, reason: str):
        self.override = override
        self.reason = reason
        super().__init__(f"{override!r}: {reason}")


def schema_path() -> Path:
    """The shipped schema. A verl of another version, where one is installed (the trainer image), is
    refused: the schema would not describe the verl that runs the command."""
    try:
        installed = importlib.metadata.version(VERL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        installed = VERL_VERSION  # the operator: no verl needed
    if installed != VERL_VERSION:
        raise FileNotFoundError(f"verl {installed} is installed, but the trainer is built for {VERL_VERSION}")
    return SCHEMA_FILE


@functools.cache
def _schema() -> DictConfig:
    schema = OmegaConf.load(schema_path())
    _type_leaves(schema)
    OmegaConf.set_struct(schema, True)
    return schema


def _type_leaves(config: DictConfig) -> None:
    """Replace each untyped scalar default with a node of its type (null and `???` stay open,
    interpolations stay as they are)."""
    for key in list(config.keys()):
        node = config._get_node(key)
        if isinstance(node, DictConfig):
            _type_leaves(node)
        elif isinstance(node, AnyNode) and not node._is_interpolation() and not node._is_missing():
            typed = _TYPED_NODES.get(type(node._value()))
            if typed is not None:
                config[key] = typed(value=node._value(), is_optional=True)


def compose(overrides: list[str]) -> DictConfig:
    """verl's default config with `overrides` applied in order; OverrideError names the first bad one."""
    config = _schema().copy()
    parser = OverridesParser.create()
    for text in overrides:  # one at a time, so the error names the override at fault
        try:
            ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides([text]), config)
        except (HydraException, OmegaConfBaseException) as exc:
            raise OverrideError(text, _reason(exc)) from None
        except Exception as exc:  # noqa: BLE001 - Hydra's internals fail on odd input in other ways too
            raise OverrideError(text, f"Hydra cannot apply it ({type(exc).__name__}: {exc})") from None
    return config


def _reason(exc: BaseException) -> str:
    """Hydra wraps OmegaConf's message ("Value 'abc' ... could not be converted to Integer"); keep both."""
    if isinstance(exc.__cause__, ConfigAttributeError | ConfigKeyError):
        detail = str(exc.__cause__).splitlines()[0]
        return f"verl {VERL_VERSION}'s config has no such key ({detail}); to add a key, prefix it with '+'"
    messages = [str(exc).splitlines()[0]]
    cause = exc.__cause__
    if cause is not None:
        messages.append(str(cause).splitlines()[0])
    return ": ".join(dict.fromkeys(message for message in messages if message))


def format_value(value: object) -> str:
    """A Python value in Hydra's override grammar; strings are quoted only when they would otherwise
    parse as something else (a number, a bool, null, a list) or not parse at all."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(item) for item in value) + "]"
    if isinstance(value, str):
        if _parses_to(value) == value:
            return value
        quoted = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if _parses_to(quoted) != value:
            raise ValueError(f"{value!r} cannot be written as a Hydra override value")
        return quoted
    raise TypeError(f"no Hydra form for {type(value).__name__} {value!r}")


def _parses_to(text: str) -> object:
    try:
        parsed = OverridesParser.create().parse_override(f"key={text}")
    except HydraException:
        return None
    value = parsed.value()
    return value if isinstance(value, str) else None


# --- the shipped copy, generated from the installed verl wheel (the test environment; not the operator's)


def installed_schema() -> Path:
    """`_generated_ppo_trainer.yaml` inside the installed verl wheel, found through the package's metadata
    (importing verl would import torch)."""
    try:
        distribution = importlib.metadata.distribution(VERL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"verl is not installed; install verl=={VERL_VERSION} to generate the schema") from None
    if distribution.version != VERL_VERSION:
        raise FileNotFoundError(f"verl {distribution.version} is installed, but the schema is for {VERL_VERSION}")
    path = Path(distribution.locate_file(GENERATED_CONFIG))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the verl {VERL_VERSION} installation")
    return path


def render_schema(source: Path) -> str:
    """The shipped file's text: a header that says where it comes from, then the wheel's file unchanged."""
    header = (
        f"# GENERATED by `{GENERATE}`: do not edit.\n"
        f"# A copy of {GENERATED_CONFIG} from the verl {VERL_VERSION} wheel\n"
        "# (https://github.com/volcengine/verl, Apache License 2.0): the config verl's main_ppo composes,\n"
        "# flattened. soundmind checks verl overrides against it (soundmind.train.verl_config), so the\n"
        "# operator needs no verl; tests/unit/train/test_verl_schema.py fails when it drifts from the wheel.\n"
    )
    return header + source.read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundmind.train.verl_config", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--write", action="store_true", help=f"write {SCHEMA_FILE.name} (else: check that it is current)"
    )
    args = parser.parse_args(argv)
    text = render_schema(installed_schema())
    if args.write:
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    elif not SCHEMA_FILE.is_file() or SCHEMA_FILE.read_text(encoding="utf-8") != text:
        print(
            f"{SCHEMA_FILE} does not match verl {VERL_VERSION}'s {GENERATED_CONFIG}: run `{GENERATE}`", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
