"""The pure parts of the autoscaling test's support: how a pod's `vllm serve` arguments configure its
stand-in, the labels a pod's series get in Prometheus, and reading the HPA's metric quantities."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from soundmind.api.serving import ServingSpec
from soundmind.serve.render import vllm_arguments
from soundmind_operator.serving import builders, names
from tests.support.autoscaling import parse_quantity
from tests.support.standins import Simulation, scrape_labels, standin_arguments


def test_a_stand_in_takes_model_name_length_and_capacity_from_the_pods_vllm_arguments():
    spec = ServingSpec.model_validate(
        {
            "model": "Qwen/Qwen2.5-Omni-7B",
            "servedModelName": "alr",
            "vllm": {"maxModelLen": 8192, "extraArgs": ["--max-num-seqs=4"]},
        }
    )
    argv = standin_arguments(vllm_arguments(spec, "Qwen/Qwen2.5-Omni-7B"), Simulation(accuracy=0.5))
    assert argv[:8] == [
        "--model",
        "Qwen/Qwen2.5-Omni-7B",
        "--served-model-name",
        "alr",
        "--max-model-len",
        "8192",
        "--max-num-seqs",
        "4",
    ]
    assert "--accuracy=0.5" in argv


def test_a_pods_series_carry_the_labels_the_scaling_query_selects():
    labels = names.match_labels("omni")
    pod = SimpleNamespace(metadata=SimpleNamespace(name="omni-abc", namespace="team-a", labels=labels))
    spec = ServingSpec.model_validate({"model": "m"})
    query = builders.scaling_query("omni", "team-a", spec)
    target = scrape_labels(pod)
    for key, value in target.items():
        if f'{key}="' in query:
            assert f'{key}="{value}"' in query
    assert all(
        f'{key}="' in query for key in ("namespace", "app_kubernetes_io_instance", "app_kubernetes_io_component")
    )
    assert {"namespace", "app_kubernetes_io_instance", "app_kubernetes_io_component"} <= set(target)


@pytest.mark.parametrize(("text", "value"), [("3", 3.0), ("2667m", 2.667), ("1500k", 1.5e6), (None, None)])
def test_hpa_quantities(text, value):
    assert parse_quantity(text) == pytest.approx(value)
