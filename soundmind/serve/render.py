"""ServingSpec -> the exact `vllm serve` arguments, checked against vLLM's own argument parser.

Every flag a spec field decides names that field; `vllm.extraArgs` come last and may change
anything but those (then the error says which field to set instead). The whole list is parsed
with the description of vLLM 0.24's own parser (`soundmind.serve.vllm_args`), so a misspelt flag
or a value of the wrong type is a ConfigError before any pod exists, not a crash-looping pod.
"""

from __future__ import annotations

import json

from soundmind.api.serving import ServingSpec
from soundmind.errors import ConfigError
from soundmind.serve.vllm_args import VllmArgumentError, validate

SERVE_COMMAND = ["vllm", "serve"]
PORT = 8000  # the OpenAI-compatible API, /health and /metrics
# One audio clip per prompt: the ALR question. vLLM sizes its encoder budget by these limits.
MM_LIMITS = {"audio": 1}

# Flags a spec field decides: extraArgs may not set them.
DECIDED_FLAGS = {
    "--served-model-name": "servedModelName",
    "--host": "the operator (the pod listens on all addresses)",
    "--port": "the operator (probes and the Service use port 8000)",
    "--max-model-len": "vllm.maxModelLen",
    "--tensor-parallel-size": "vllm.tensorParallelSize",
    "--gpu-memory-utilization": "vllm.gpuMemoryUtilization",
    "--dtype": "vllm.dtype",
}


def vllm_arguments(spec: ServingSpec, model: str) -> list[str]:
    """The arguments after `vllm serve`, for the model at `model` (an id or a path)."""
    engine = spec.vllm
    return [
        model,
        "--served-model-name",
        spec.served_model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--limit-mm-per-prompt",
        json.dumps(MM_LIMITS),
        "--max-model-len",
        str(engine.max_model_len),
        "--tensor-parallel-size",
        str(engine.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(engine.gpu_memory_utilization),
        "--dtype",
        engine.dtype,
        *engine.extra_args,
    ]


def checked_arguments(spec: ServingSpec, model: str) -> list[str]:
    """`vllm_arguments`, or ConfigError naming the extraArgs entry (or field) at fault."""
    arguments = vllm_arguments(spec, model)
    extra = spec.vllm.extra_args
    for position, text in enumerate(extra):
        flag = _flag(text)
        if flag in DECIDED_FLAGS:
            raise ConfigError(
                f"vllm.extraArgs[{position}]",
                f"{text!r} sets {flag}, which {DECIDED_FLAGS[flag]} decides; set that instead",
            )
    try:
        validate(arguments)
    except VllmArgumentError as error:
        matching = [i for i, text in enumerate(extra) if _flag(text) == _flag(error.argument) or text == error.argument]
        where = f"vllm.extraArgs[{matching[0]}]" if matching else "vllm.extraArgs" if extra else "spec"
        raise ConfigError(where, str(error)) from None
    return arguments


def _flag(text: str) -> str:
    """`--max_model_len=4` -> `--max-model-len` (vLLM accepts underscores in flag names)."""
    name = text.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name
