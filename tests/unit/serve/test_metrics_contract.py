"""The serving contract (`soundmind.api.vllm_metrics`) against the pinned vLLM wheel's own metrics source.

vLLM registers its Prometheus metrics in `vllm/v1/metrics/loggers.py` as
``self._gauge_cls(name=..., documentation=..., labelnames=..., buckets=...)``; this reads those calls
from the installed wheel's source (without importing vLLM: no torch start-up) and checks that every
metric we rely on is there with the same type, labels and buckets. A rename in a vLLM upgrade fails
here, not in a user's dashboard or autoscaler.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from soundmind.api import vllm_metrics as metrics
from soundmind.api.serving import ScalingMetric

PINNED_VLLM = "0.24.0"  # pyproject.toml's server and train extras
_KINDS = {
    "_gauge_cls": metrics.Kind.GAUGE,
    "_counter_cls": metrics.Kind.COUNTER,
    "_histogram_cls": metrics.Kind.HISTOGRAM,
}


def _loggers_source() -> Path:
    spec = importlib.util.find_spec("vllm")
    assert spec and spec.submodule_search_locations, "vLLM is not installed in the test environment"
    return Path(next(iter(spec.submodule_search_locations))) / "v1" / "metrics" / "loggers.py"


def _evaluate(node: ast.expr, names: dict[str, ast.expr]):
    """A literal, a local name bound to one, or a sum of those; None when it is anything else."""
    if isinstance(node, ast.Name):
        return _evaluate(names[node.id], names) if node.id in names else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _evaluate(node.left, names), _evaluate(node.right, names)
        return None if left is None or right is None else left + right
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def registered_metrics(source: Path) -> dict[str, dict]:
    """name -> {kind, documentation, labels, buckets} of every metric the file registers."""
    found = {}
    for function in ast.walk(ast.parse(source.read_text())):
        if not isinstance(function, ast.FunctionDef):
            continue
        names = {
            target.id: statement.value
            for statement in ast.walk(function)
            if isinstance(statement, ast.Assign)
            for target in statement.targets
            if isinstance(target, ast.Name)
        }
        for call in ast.walk(function):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in _KINDS):
                continue
            keywords = {k.arg: k.value for k in call.keywords}
            name = _evaluate(keywords["name"], names) if "name" in keywords else None
            if isinstance(name, str):
                found[name] = {
                    "kind": _KINDS[call.func.attr],
                    "documentation": _evaluate(keywords.get("documentation", ast.Constant("")), names),
                    "labels": tuple(_evaluate(keywords["labelnames"], names) or ()),
                    "buckets": tuple(_evaluate(keywords["buckets"], names) or ()) if "buckets" in keywords else (),
                }
    return found


@pytest.fixture(scope="module")
def vllm_metrics() -> dict[str, dict]:
    assert importlib.metadata.version("vllm") == PINNED_VLLM, "the test environment's vLLM is not the pinned one"
    return registered_metrics(_loggers_source())


@pytest.mark.parametrize("metric", metrics.ALL, ids=lambda m: m.registered_name)
def test_vllm_registers_each_contract_metric_as_we_describe_it(metric: metrics.VllmMetric, vllm_metrics):
    assert metric.registered_name in vllm_metrics, f"vLLM {PINNED_VLLM} no longer registers {metric.registered_name}"
    registered = vllm_metrics[metric.registered_name]
    assert registered["kind"] is metric.kind
    assert registered["labels"] == metric.labels
    assert registered["documentation"] == metric.documentation
    if metric.kind is metrics.Kind.HISTOGRAM:
        assert registered["buckets"] == metric.buckets


def test_the_autoscaling_query_uses_contract_gauges(vllm_metrics):
    for scaling in ScalingMetric:
        assert vllm_metrics[scaling.prometheus_name]["kind"] is metrics.Kind.GAUGE


def test_finished_reasons_are_vllms():
    engine = _loggers_source().parents[1] / "engine" / "__init__.py"
    (strings,) = [
        statement.value
        for statement in ast.parse(engine.read_text()).body
        if isinstance(statement, ast.Assign) and getattr(statement.targets[0], "id", "") == "FINISH_REASON_STRINGS"
    ]
    assert ast.literal_eval(strings) == metrics.FINISHED_REASONS


def test_gone_names_are_not_in_the_contract(vllm_metrics):
    """Names other charts still query: vLLM 0.24 no longer has them, so neither do we."""
    for gone in ("vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"):
        assert gone not in vllm_metrics and gone not in {m.registered_name for m in metrics.ALL}
