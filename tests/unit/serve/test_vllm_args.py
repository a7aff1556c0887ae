"""`vllm serve` arguments validated without vLLM agree with vLLM's own parser.

The description the operator ships is what the installed vLLM (the server image's pin) generates, and
for a table of argument lists :func:`validate` accepts exactly what vLLM's real `vllm serve` parser
accepts. Importing vLLM (torch included) takes about ten seconds, once per session.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from soundmind.api.serving import ServingSpec
from soundmind.serve import vllm_args
from soundmind.serve.render import vllm_arguments
from soundmind.serve.vllm_args import VllmArgumentError, validate

ROOT = Path(__file__).resolve().parents[3]
MODEL = "Qwen/Qwen2.5-Omni-7B"
# What the operator's Deployment renders (before the user's extraArgs).
RENDERED = vllm_arguments(ServingSpec(model=MODEL), MODEL)

GOOD = {
    "rendered": [],
    "flag=value": ["--max-model-len=4k", "--dtype=half"],
    "underscores": ["--max_model_len", "8192", "--gpu_memory_utilization=0.85"],
    "readable ints": ["--max-model-len", "32K", "--max-num-batched-tokens", "8k"],
    "auto length": ["--max-model-len", "auto"],
    "negative length": ["--max-model-len", "-1"],
    "boolean": ["--enable-prefix-caching", "--enforce-eager"],
    "negated boolean": ["--no-enable-prefix-caching", "--no-enforce-eager"],
    "alias": ["-tp", "2"],
    "unique prefix": ["--max-model", "4096"],
    "dotted json key": ["--limit-mm-per-prompt.audio", "2"],
    "json with =": ['--limit-mm-per-prompt={"audio": 1, "image": 0}'],
    "optimization level": ["-O3"],
    "optimization level apart": ["-O", "2"],
    "config object": ["--compilation-config", '{"cudagraph_capture_sizes": [1, 2, 4]}'],
    "config object readable": ["-cc", '{"max_cudagraph_capture_size": 1k}'],
    "choice": ["--kv-cache-dtype", "fp8", "--uvicorn-log-level", "debug"],
    "choice after lowercasing": ["--moe-backend", "TRITON"],
    "optional json none": ["--mm-processor-kwargs", "None"],
    "json or str": ["--hf-overrides", '{"architectures": ["X"]}', "--pt-load-map-location", "cpu"],
    "several values": ["--served-model-name", "a", "b", "--api-key", "k1", "k2"],
    "appended": ["--middleware", "a.b", "--middleware", "c.d"],
    "lora modules": ["--enable-lora", "--lora-modules", "a=/x", '{"name": "b", "path": "/y"}'],
    "optional value flag": ["--hf-token"],
}
BAD = {
    "misspelt flag": ["--max-modle-len", "4096"],
    "misspelt with underscores": ["--max_modle_len", "4096"],
    "int given abc": ["--tensor-parallel-size", "abc"],
    "int given float": ["-tp", "1.5"],
    "readable int decimal binary": ["--max-model-len", "1.5K"],
    "float given word": ["--gpu-memory-utilization", "high"],
    "bad choice": ["--dtype", "fp7"],
    "bad choice lowercased": ["--moe-backend", "TRITONX"],
    "optional choice None": ["--safetensors-load-strategy", "None"],
    "old limit syntax": ["--limit-mm-per-prompt", "audio=1"],
    "bad json": ["--limit-mm-per-prompt", '{"audio": 1'],
    "missing value at end": ["--port"],
    "missing value before flag": ["--port", "--host", "x"],
    "dotted key without value": ["--limit-mm-per-prompt.audio"],
    "value for a boolean": ["--enable-prefix-caching=yes"],
    "unknown negation": ["--no-such-flag"],
    "unknown config key": ["--compilation-config", '{"levl": 3}'],
    "config not an object": ["--compilation-config", "[1]"],
    "ambiguous prefix": ["--max", "3"],
    "stray positional": ["stray"],
    "second model by --model": ["--model", "other/model"],
    "lora module without path": ["--lora-modules", '{"name": "x"}'],
}


@pytest.fixture(scope="module")
def vllm_parser():
    """vLLM's real top-level parser (``vllm ...``); importing vLLM on this CPU machine must work."""
    top, _ = vllm_args.vllm_serve_parser()
    return top


def vllm_accepts(parser, args: list[str]) -> bool:
    """Whether vLLM's parser takes ``vllm serve *args`` (an error exits, or raises from its preprocessing)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parser.parse_args(["serve", *args])
        except SystemExit as error:
            return error.code == 0
        except Exception:  # noqa: BLE001 - e.g. IndexError from a dotted key with no value: vLLM stops too
            return False
    return True


def we_accept(args: list[str]) -> bool:
    try:
        validate(args)
    except VllmArgumentError:
        return False
    return True


def test_description_is_what_the_pinned_vllm_generates(vllm_parser):
    pinned = re.search(r"^vllm==(\S+)$", (ROOT / "images/server/requirements.lock").read_text(), re.M)[1]
    assert version("vllm") == pinned, "the test environment must have the server image's vLLM"
    assert vllm_args.render(vllm_args.describe()) == vllm_args.DATA_FILE.read_text(), (
        f"{vllm_args.DATA_FILE.name} is stale: run `{vllm_args.GENERATE}` and commit the result"
    )


@pytest.mark.parametrize(("args", "accepted"), [(a, True) for a in GOOD.values()] + [(a, False) for a in BAD.values()],
                         ids=[f"good: {name}" for name in GOOD] + [f"bad: {name}" for name in BAD])  # fmt: skip
def test_validate_agrees_with_vllms_parser(vllm_parser, args, accepted):
    assert vllm_accepts(vllm_parser, [*RENDERED, *args]) is accepted, "the table's expectation is wrong"
    assert we_accept([*RENDERED, *args]) is accepted


@pytest.mark.parametrize(
    ("args", "argument", "reason"),
    [
        (["--max-modle-len", "4096"], "--max-modle-len", "unknown flag in vLLM 0.24.0; did you mean --max-model-len?"),
        (["--max_modle_len=4096"], "--max_modle_len", "did you mean --max-model-len?"),
        (["--tensor-parallel-size", "abc"], "--tensor-parallel-size/-tp", "'abc' is not an integer"),
        (["--max-model-len", "abc"], "--max-model-len", "'abc' is not an integer (suffixes allowed"),
        (["--dtype", "fp7"], "--dtype", "invalid choice: 'fp7' (choose from 'auto', 'bfloat16'"),
        (["--limit-mm-per-prompt", "audio=1"], "--limit-mm-per-prompt", "'audio=1' is not valid JSON"),
        (["--port"], "--port", "expected one argument"),
        (["--compilation-config", '{"levl": 3}'], "--compilation-config/-cc", "unknown key(s) levl; valid keys: "),
        (["--max", "3"], "--max", "could match --max-log-len, --max-model-len"),
        (["--enable-prefix-caching=yes"], "--enable-prefix-caching/--no-enable-prefix-caching", "ignored explicit"),
        (["stray"], "stray", f"the only positional argument is the model (here {MODEL!r})"),
        (["--config", "serve.yaml"], "--config", "the file would be read in the pod"),
        (["--help"], "--help", "prints vLLM's help and exits"),
    ],
)
def test_errors_name_the_argument_and_what_is_valid(args, argument, reason):
    with pytest.raises(VllmArgumentError) as raised:
        validate([*RENDERED, *args])
    assert raised.value.argument == argument
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"vllm serve argument {argument}: ")


def test_validation_needs_neither_vllm_nor_torch():
    """The operator's image has neither: validating must not import them."""
    code = (
        "import sys; from soundmind.serve.vllm_args import validate; "
        f"validate({RENDERED!r}); "
        "assert not {'vllm', 'torch'} & set(sys.modules), sorted({'vllm', 'torch'} & set(sys.modules))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
