"""The serving chart rendered (no cluster): its one SoundMindServing is a valid spec, and a bad value
is refused by the schema (generated from ServingSpec) naming it."""

from __future__ import annotations

import pytest

from soundmind.api.serving import ServingSpec
from soundmind.version import VERSION
from tests.unit.charts.helm import SERVING_CHART, helm, of_kind, template

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_lint_strict():
    assert "0 chart(s) failed" in helm("lint", "--strict", str(SERVING_CHART), "--set", "model=m").stdout


def test_model_from_the_command_line_is_a_valid_serving():
    (serving,) = of_kind(
        template(SERVING_CHART, "--set", "model=Qwen/Qwen2.5-Omni-7B", release="serving"), "SoundMindServing"
    )
    assert serving["metadata"]["name"] == "serving"
    assert serving["spec"] == {"model": "Qwen/Qwen2.5-Omni-7B"}
    ServingSpec.model_validate(serving["spec"])


def test_every_spec_field_passes_through():
    values = [
        "--set", "name=alr,fromTraining.name=alr-grpo,servedModelName=alr,replicas=2",
        # --set reads 0.8 as a string and 4 as a number: --set-json and --set-string say which.
        "--set", "autoscaling.enabled=true,autoscaling.maxReplicas=4,autoscaling.metric=kv_cache_usage",
        "--set-json", "autoscaling.target=0.8",
        "--set-string", "resources.cpu=4",
        "--set", "vllm.tensorParallelSize=2,vllm.extraArgs={--enforce-eager}",
        "--set", "hfTokenSecret.name=hf,hfTokenSecret.key=token,startupTimeoutSeconds=600",
    ]  # fmt: skip
    (serving,) = of_kind(template(SERVING_CHART, *values), "SoundMindServing")
    assert serving["metadata"]["name"] == "alr"
    spec = ServingSpec.model_validate(serving["spec"])
    assert spec.from_training.name == "alr-grpo" and spec.model is None
    assert spec.autoscaling.max_replicas == 4 and spec.vllm.extra_args == ["--enforce-eager"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["--set", "model=m", "--set", "autoscaling.maxReplica=3"], "'maxReplica'"),
        (["--set", "model=m", "--set", "autoscaling.metric=gpu"], "/autoscaling/metric"),
        (["--set", "model=m", "--set", "vllm.gpuMemoryUtilization=1.5"], "/vllm/gpuMemoryUtilization"),
        (["--set", "model=m", "--set", "replicas=-1"], "/replicas"),
        (["--set", "model=m", "--set", "name=Bad_Name"], "/name"),
        ([], "exactly one of model"),
        (["--set", "model=m", "--set", "fromTraining.name=t"], "exactly one of model"),
        (["--set", "model=m", "--set", f"image.digest={DIGEST}"], "missing property 'repository'"),
        (["--set", "model=m", "--set", "image.repository=r,image.digest=sha256:abc"], "/image/digest"),
        (["--set", "model=m", "--set", "image.repository=r,image.tga=1"], "'tga'"),
    ],
)
def test_bad_values_are_refused_naming_them(values: list[str], named: str):
    result = helm("template", "serving", str(SERVING_CHART), *values, check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "image"),
    [
        (["--set", "image=r.example/soundmind-server:1.2.3"], "r.example/soundmind-server:1.2.3"),
        (["--set", "image.repository=r.example/soundmind-server"], f"r.example/soundmind-server:{VERSION}"),
        (
            ["--set", f"image.repository=r.example/soundmind-server,image.digest={DIGEST}", "--set-string=image.tag=1"],
            f"r.example/soundmind-server@{DIGEST}",
        ),
    ],
    ids=["string", "parts-tag-is-app-version", "digest-wins"],
)
def test_image_as_a_string_or_in_parts(values: list[str], image: str):
    (serving,) = of_kind(template(SERVING_CHART, "--set", "model=m", *values), "SoundMindServing")
    assert serving["spec"]["image"] == image
    ServingSpec.model_validate(serving["spec"])
