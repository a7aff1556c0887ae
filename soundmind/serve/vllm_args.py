"""`vllm serve` arguments checked without vLLM, so the operator refuses a misspelt flag or a bad value
in `spec.vllm.extraArgs` before any pod exists, naming the argument.

vLLM builds its parser from its config classes, which import torch and most of the engine (seconds,
gigabytes): not something the operator's image carries. So the parser is described once, from the
pinned wheel, in `vllm_serve_args.json` beside this module (``python -m soundmind.serve.vllm_args
--write``; a unit test fails when it no longer matches the installed vLLM), and :func:`validate`
rebuilds an argparse parser from that description:

- every option string (aliases such as ``-tp``, ``--no-x`` negations; unique prefixes, as argparse
  allows them for vLLM too), nargs and choices;
- each value's type, converted as vLLM converts it: int, float, vLLM's readable ints (``32k``,
  ``auto``), JSON (``--limit-mm-per-prompt '{"audio": 1}'``), config objects (a JSON object whose
  top-level keys must be fields of the vLLM config class), ``None`` for optional values;
- what vLLM's ``FlexibleArgumentParser`` does first: ``--max_model_len`` is ``--max-model-len``,
  dotted keys build JSON (``--limit-mm-per-prompt.audio 1``), ``-O3``, and ``--model X`` is the
  positional model.

Not checked here, because vLLM checks them later, when it builds the engine: values inside config
objects beyond their top-level keys, combinations of flags, paths. ``--config FILE`` and ``--help``
are refused: the file would be read inside the pod, where the operator cannot see it, and help exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("vllm_serve_args.json")
GENERATE = "python -m soundmind.serve.vllm_args --write"


class VllmArgumentError(ValueError):
    """An argument that `vllm serve` would refuse: ``argument`` is the flag (or value), ``reason`` says
    why and what would be valid."""

    def __init__(self, argument: str, reason: str):
        super().__init__(f"vllm serve argument {argument}: {reason}")
        self.argument = argument
        self.reason = reason


def validate(args: Sequence[str]) -> None:
    """Raises :class:`VllmArgumentError` if vLLM's parser would refuse ``vllm serve *args``
    (``args`` = ``[model, "--flag", "value", ...]``, flags also as ``--flag=value``)."""
    parser, flags = _parser()
    try:
        namespace, extras = parser.parse_known_args(_flexible(list(args)))
    except argparse.ArgumentError as error:
        raise VllmArgumentError(error.argument_name or "?", error.message) from None
    except _ParserExit as error:  # argparse's errors that are not ArgumentErrors: an ambiguous prefix
        option = re.match(r"ambiguous option: ([^=\s]+)", str(error))
        raise VllmArgumentError(option[1] if option else "?", str(error)) from None
    for extra in extras:
        if extra.startswith("-") and not _NUMBER.fullmatch(extra):
            name = extra.split("=", 1)[0]
            close = difflib.get_close_matches(name, flags, n=1)
            hint = f"did you mean {close[0]}?" if close else "`vllm serve --help` lists the valid ones"
            as_given = next((arg.split("=", 1)[0] for arg in args if _dashed(arg.split("=", 1)[0]) == name), name)
            raise VllmArgumentError(as_given, f"unknown flag in vLLM {_description()['vllm']}; {hint}")
        raise VllmArgumentError(
            extra, f"unexpected value: the only positional argument is the model (here {namespace.model_tag!r})"
        )


# --- what vLLM's FlexibleArgumentParser.parse_args does before argparse (vllm/utils/argparse_utils.py)

_MODEL_FLAG = re.compile(r"^--model(=.+|$)")
_SERVED_MODEL_NAME = re.compile(r"^--served[-_]model[-_]name(=.+|$)")
_CONFIG_FLAG = re.compile(r"^--config(=.+|$)")
_FLAG_NAME = re.compile(r"(?<=--)[^.]*")  # from the dashes to the first dot
_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's negative numbers: values, not flags


def _flexible(args: list[str]) -> list[str]:
    model_at = next((i for i, arg in enumerate(args) if _MODEL_FLAG.match(arg)), None)
    if model_at is not None:  # `--model X` (deprecated): X becomes the positional model
        if args[model_at] == "--model":
            if model_at + 1 == len(args):
                raise VllmArgumentError("--model", "expected one argument")
            model, rest = args[model_at + 1], model_at + 2
        else:
            model, rest = args[model_at].removeprefix("--model="), model_at + 1
        args = [model, *args[:model_at], *args[rest:]]
    if args and args[0].startswith("-") and any(_SERVED_MODEL_NAME.match(arg) for arg in args):
        raise VllmArgumentError(args[0], "the model must come first: `vllm serve <model> --<flag> <value>`")
    for arg in args:
        if _CONFIG_FLAG.match(arg):
            raise VllmArgumentError("--config", "not accepted: the file would be read in the pod; give its options")
        if arg in ("-h", "--help") or arg.startswith("--help="):
            raise VllmArgumentError(arg, "prints vLLM's help and exits instead of serving")

    processed: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--"):
            key, equals, value = arg.partition("=")
            processed.append(_dashed(key) + equals + value)
        elif arg.startswith("-O") and arg != "-O":  # -O3, -O=3
            processed += ["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]]
        elif arg == "-O" and i + 1 < len(args) and args[i + 1] in {"0", "1", "2", "3"}:
            processed.append("--optimization-level")
        else:
            processed.append(arg)

    # `--json-arg.key value` (and `--json-arg.list+ a,b`) merge into one `--json-arg '{...}'`, appended last.
    consumed: set[int] = set()
    dotted: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for i, arg in enumerate(processed):
        if i in consumed or not (arg.startswith("-") and "." in arg):
            continue
        if "=" in arg:
            arg, text = arg.split("=", 1)
            if "." not in arg:
                continue
        elif i + 1 == len(processed):
            raise VllmArgumentError(arg, "expected one argument")
        else:
            text = processed[i + 1]
            consumed.add(i + 1)
        if arg.endswith("+"):
            arg, text = arg[:-1], json.dumps(text.split(","))
        flag, *keys = arg.split(".")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = _human_int(text)
            except argparse.ArgumentTypeError:
                value = text
        for key in reversed(keys):
            value = {key: value}
        _merge(dotted[flag], value)
        consumed.add(i)
    processed = [arg for i, arg in enumerate(processed) if i not in consumed]
    for flag, value in dotted.items():
        processed += [flag, json.dumps(value)]
    return processed


def _dashed(flag: str) -> str:
    """vLLM accepts `--max_model_len` for `--max-model-len` (not in dotted JSON keys)."""
    return _FLAG_NAME.sub(lambda m: m[0].replace("_", "-"), flag, count=1) if flag.startswith("--") else flag


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] += value
        else:
            into[key] = value


# --- value types: each converts a string as vLLM's does (choices are checked on the result)

_READABLE = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT])")
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _human_int(text: str) -> int:
    match = _READABLE.fullmatch(text.strip())
    if match and match[2] in _DECIMAL:
        return int(float(match[1]) * _DECIMAL[match[2]])
    if match:
        if "." in match[1]:
            raise argparse.ArgumentTypeError(f"{text!r}: no decimals with the binary suffix {match[2]}")
        return int(match[1]) * _BINARY[match[2]]
    try:
        return int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer (suffixes allowed: 32k = 32000, 32K = 32768)"
        ) from None


def _human_int_or_auto(text: str) -> int:
    return -1 if text.strip() == "-1" or text.strip().lower() == "auto" else _human_int(text)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({error.msg} at column {error.colno})") from None


def _json_or_str(text: str) -> Any:
    return _json(text) if re.match(r"(?s)^\s*{.*}\s*$", text) else text


def _lowercase_snake(text: str) -> str:
    return text.lower().replace("-", "_")


def _comma_list(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in (part.strip() for part in text.split(","))]


def _config(fields: Sequence[str]) -> Callable[[str], dict[str, Any]]:
    """A vLLM config object as JSON: readable numbers allowed outside strings, known top-level keys only."""

    def config_object(text: str) -> dict[str, Any]:
        parts = re.split(r'("(?:[^"\\]|\\.)*")', text)
        parts[::2] = [re.sub(r"\b\d+(?:\.\d+)?[kKmMgGtT]\b", lambda m: str(_human_int(m[0])), p) for p in parts[::2]]
        value = _json("".join(parts))
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object")
        if unknown := sorted(set(value) - set(fields)):
            raise argparse.ArgumentTypeError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
        return value

    return config_object


_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": _int,
    "float": _float,
    "human_int": _human_int,
    "human_int_or_auto": _human_int_or_auto,
    "json": _json,
    "json_or_str": _json_or_str,
    "lowercase_snake": _lowercase_snake,
    "comma_list": _comma_list,
}


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def optional(text: str) -> Any:
        return None if text in ("", "None") else convert(text)

    return optional


class _LoraModules(argparse.Action):
    """vLLM's LoRAParserAction: each value is ``name=path`` or a JSON object of LoRAModulePath's fields."""

    def __init__(self, *args: Any, fields: Sequence[str], needs: Sequence[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields, self.needs = fields, needs

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option=None):
        for item in values or []:
            if item in (None, ""):
                continue
            if "=" in item and "," not in item:
                if item.count("=") != 1:
                    raise argparse.ArgumentError(self, f"{item!r} is not name=path")
                continue
            value = _json(item)
            if not isinstance(value, dict):
                raise argparse.ArgumentError(self, f"{item!r} is neither name=path nor a JSON object")
            unknown, missing = set(value) - set(self.fields), set(self.needs) - set(value)
            if unknown or missing:
                wrong = f"unknown {', '.join(sorted(unknown))}" if unknown else f"missing {', '.join(sorted(missing))}"
                raise argparse.ArgumentError(self, f"{item!r}: {wrong}; fields: {', '.join(self.fields)}")


class _ParserExit(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override] - raise rather than exit
        raise _ParserExit(message)


@cache
def _description() -> dict[str, Any]:
    if not DATA_FILE.is_file():
        raise FileNotFoundError(f"{DATA_FILE} is missing from the soundmind package; regenerate it: {GENERATE}")
    return json.loads(DATA_FILE.read_text())


@cache
def _parser() -> tuple[argparse.ArgumentParser, tuple[str, ...]]:
    """The parser rebuilt from the description, and every option string (for suggestions)."""
    description = _description()
    parser = _Parser(prog="vllm serve", add_help=False, exit_on_error=False)
    parser.add_argument(description["positional"], nargs="?")
    for option in description["options"]:
        flags, action = option["flags"], option["action"]
        kwargs: dict[str, Any] = {}
        if action in ("store", "append", "lora_modules"):
            convert = _config(option["fields"]) if option["type"] == "config" else _TYPES[option["type"]]
            kwargs["type"] = _optional(convert) if option.get("optional") else convert
            kwargs["nargs"] = option.get("nargs")
            kwargs["choices"] = option.get("choices")
            if kwargs["nargs"] == "?":
                kwargs["const"] = True
        if action == "boolean":
            negations = {f"--no-{flag[2:]}" for flag in flags if flag.startswith("--")}
            flags = [flag for flag in flags if flag not in negations]  # BooleanOptionalAction adds them back
            kwargs["action"] = argparse.BooleanOptionalAction
        elif action == "lora_modules":
            kwargs.update(action=_LoraModules, fields=option["lora_fields"], needs=option["lora_required"])
        else:
            kwargs["action"] = action
        parser.add_argument(*flags, **kwargs)
    return parser, tuple(flag for option in description["options"] for flag in option["flags"])


# --- the description, generated from the installed vLLM (the test environment; not the operator's)


def vllm_serve_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """vLLM's own parser as `vllm serve` builds it (vllm/entrypoints/cli/main.py): the top-level one, which
    parses ``["serve", *args]``, and the serve subparser. Imports vLLM (torch included): seconds."""
    cpu_platform_without_gpu()  # option names and types do not depend on it
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand().subparser_init(top.add_subparsers(dest="subparser"))
    return top, serve


def cpu_platform_without_gpu() -> bool:
    """vLLM's config classes (its CLI parser's defaults included) ask the platform for defaults; with no
    GPU vLLM finds none, and takes the CPU platform, as `vllm bench` does on such machines. True when
    the CPU platform was taken."""
    import vllm.platforms

    if not vllm.platforms.current_platform.is_unspecified():
        return False
    from vllm.platforms.cpu import CpuPlatform

    vllm.platforms.current_platform = CpuPlatform()
    return True


def describe() -> dict[str, Any]:
    """The description of `vllm serve`'s parser in the installed vLLM, as written to :data:`DATA_FILE`."""
    _, serve = vllm_serve_parser()
    (positional,) = [action.dest for action in serve._actions if not action.option_strings]
    options = [_describe_option(action) for action in serve._actions if action.option_strings]
    return {
        "generated_by": GENERATE,
        "vllm": _version(),
        "positional": positional,
        "options": [option for option in options if option],
    }


def _version() -> str:
    from importlib.metadata import version

    return version("vllm")


def _describe_option(action: argparse.Action) -> dict[str, Any] | None:
    if isinstance(action, argparse._HelpAction):
        return None  # refused by validate(): it prints help and exits
    option: dict[str, Any] = {"flags": list(action.option_strings)}
    simple = {
        argparse._StoreAction: "store",
        argparse._AppendAction: "append",
        argparse._StoreTrueAction: "store_true",
        argparse._StoreFalseAction: "store_false",
        argparse.BooleanOptionalAction: "boolean",
    }
    if type(action).__name__ == "LoRAParserAction":
        from vllm.entrypoints.openai.models.protocol import LoRAModulePath

        fields = [field for field in dataclasses.fields(LoRAModulePath) if field.init]
        option["action"] = "lora_modules"
        option["lora_fields"] = [field.name for field in fields]
        option["lora_required"] = [f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING]
    elif type(action) in simple:
        option["action"] = simple[type(action)]
    else:
        raise ValueError(f"{action.option_strings}: unknown argparse action {type(action)}; teach {__name__}")
    if option["action"] in ("store", "append", "lora_modules"):
        option.update(_describe_type(action.type, action.option_strings))
        if action.nargs is not None:
            option["nargs"] = action.nargs
    if action.choices is not None:
        choices = list(action.choices)
        if not all(type(choice) in (str, int, float) for choice in choices):
            raise ValueError(f"{action.option_strings}: choices {choices!r} are not all str, int or float")
        option["choices"] = choices
    return option


def _describe_type(convert: Any, flags: list[str]) -> dict[str, Any]:
    from vllm.engine import arg_utils
    from vllm.utils import argparse_utils

    known = {
        None: "str",
        str: "str",
        int: "int",
        float: "float",
        json.loads: "json",
        argparse_utils.human_readable_int: "human_int",
        argparse_utils.human_readable_int_or_auto: "human_int_or_auto",
        arg_utils.union_dict_and_str: "json_or_str",
    }
    if convert in known:
        return {"type": known[convert]}
    name = getattr(convert, "__qualname__", "")
    code, cells = getattr(convert, "__code__", None), getattr(convert, "__closure__", None) or ()
    closure = dict(zip(code.co_freevars, (cell.cell_contents for cell in cells), strict=True)) if code else {}
    if name == "optional_type.<locals>._optional_type":
        return {**_describe_type(closure["return_type"], flags), "optional": True}
    if name == "parse_type.<locals>._parse_type":  # only changes the error message
        return _describe_type(closure["return_type"], flags)
    if name == "_compute_kwargs.<locals>.parse_dataclass":
        (config_class,) = convert.__defaults__
        return {"type": "config", "fields": sorted(f.name for f in dataclasses.fields(config_class) if f.init)}
    if name.endswith("<lambda>"):  # inline conversions: recognised by what they do
        if convert("Ab-c") == "ab_c":
            return {"type": "lowercase_snake"}
        if convert("2, x") == [2, "x"]:
            return {"type": "comma_list"}
    raise ValueError(f"{flags}: unknown value type {name or convert!r}; teach {__name__}")


def render(description: dict[str, Any]) -> str:
    """The data file's text: one option per line, so a vLLM upgrade reads as a small diff."""
    head = "".join(
        f"  {json.dumps(key)}: {json.dumps(value)},\n" for key, value in description.items() if key != "options"
    )
    options = ",\n".join(f"    {json.dumps(option)}" for option in description["options"])
    return f'{{\n{head}  "options": [\n{options}\n  ]\n}}\n'


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soundmind.serve.vllm_args", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {DATA_FILE.name} (else: check that it is current)")
    args = parser.parse_args(argv)
    text = render(describe())
    if args.write:
        DATA_FILE.write_text(text)
        print(f"wrote {DATA_FILE}", file=sys.stderr)
    elif not DATA_FILE.is_file() or DATA_FILE.read_text() != text:
        print(f"{DATA_FILE} does not match vLLM {_version()}: run `{GENERATE}`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
