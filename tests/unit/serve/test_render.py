"""ServingSpec -> `vllm serve` arguments: what each spec field decides, and a bad `extraArgs`
entry named before any pod exists."""

import pytest

from soundmind.api.serving import ServingSpec
from soundmind.errors import ConfigError
from soundmind.serve.render import DECIDED_FLAGS, checked_arguments, vllm_arguments
from soundmind.serve.vllm_args import vllm_serve_parser

MODEL = "Qwen/Qwen2.5-Omni-7B"


def spec(*extra: str, **vllm) -> ServingSpec:
    return ServingSpec.model_validate({"model": MODEL, "vllm": {**vllm, "extraArgs": list(extra)}})


def test_vllms_own_parser_reads_every_setting_from_the_rendered_command():
    serving = ServingSpec.model_validate(
        {
            "model": MODEL,
            "servedModelName": "alr",
            "vllm": {"maxModelLen": 8192, "tensorParallelSize": 2, "gpuMemoryUtilization": 0.8, "dtype": "float16"},
        }
    )
    top, _ = vllm_serve_parser()
    parsed = top.parse_args(["serve", *checked_arguments(serving, MODEL)])
    assert parsed.model_tag == MODEL and parsed.served_model_name == ["alr"]
    assert (parsed.host, parsed.port) == ("0.0.0.0", 8000)
    assert parsed.max_model_len == 8192 and parsed.tensor_parallel_size == 2
    assert parsed.gpu_memory_utilization == 0.8 and parsed.dtype == "float16"
    assert parsed.limit_mm_per_prompt == {"audio": 1}


@pytest.mark.parametrize(
    ("extra", "where", "said"),
    [
        (["--max-modle-len=4096"], "vllm.extraArgs[0]", "did you mean --max-model-len"),
        (["--enable-prefix-caching", "--max-num-seqs", "abc"], "vllm.extraArgs[1]", "--max-num-seqs"),
        (["--kv-cache-dtype=fp7"], "vllm.extraArgs[0]", "fp7"),
        (["--port", "9000"], "vllm.extraArgs[0]", "probes and the Service use port 8000"),
        (["--max_model_len=4096"], "vllm.extraArgs[0]", "vllm.maxModelLen decides"),
    ],
)
def test_a_bad_extra_argument_is_named(extra, where, said):
    with pytest.raises(ConfigError) as error:
        checked_arguments(spec(*extra), MODEL)
    assert error.value.field == where and said in str(error.value), str(error.value)


def test_extra_arguments_come_last_and_may_change_soundmind_defaults():
    rendered = checked_arguments(spec("--limit-mm-per-prompt", '{"audio": 2}', "--enable-prefix-caching"), MODEL)
    assert rendered[-3:] == ["--limit-mm-per-prompt", '{"audio": 2}', "--enable-prefix-caching"]


def test_every_decided_flag_is_rendered():
    rendered = vllm_arguments(spec(), MODEL)
    assert set(DECIDED_FLAGS) <= set(rendered)
