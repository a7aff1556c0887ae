"""The serving contract with vLLM's Prometheus metrics: names, types, labels and buckets.

One module for every consumer: the autoscaling query (`soundmind.api.serving.ScalingMetric`), the
vLLM stand-in's exporter (`soundmind.serve.standin`), dashboards and alert rules. The values are
vLLM 0.24's (`vllm/v1/metrics/loggers.py`); `tests/unit/serve/test_metrics_contract.py` reads that
file from the pinned wheel and fails when vLLM renames, retypes or relabels one of them, so a
rename breaks our build instead of a user's dashboard or autoscaler.

Names are as vLLM registers them; Prometheus exposes a counter with ``_total`` appended
(:attr:`VllmMetric.series`), a histogram as ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Every vLLM metric carries these: the served model name (--served-model-name) and the engine index.
MODEL_NAME_LABEL = "model_name"
ENGINE_LABEL = "engine"
ENGINE_LABELS = (MODEL_NAME_LABEL, ENGINE_LABEL)
FINISHED_REASON_LABEL = "finished_reason"
# vLLM's FinishReason strings (vllm/v1/engine/__init__.py), the values of finished_reason.
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")


class Kind(enum.StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class VllmMetric:
    name: str  # as vLLM registers it, e.g. "vllm:num_requests_waiting"
    kind: Kind
    documentation: str
    labels: tuple[str, ...] = ENGINE_LABELS
    buckets: tuple[float, ...] = ()  # histograms only

    @property
    def series(self) -> str:
        """The name a query uses: counters get ``_total``; histograms are queried by their
        ``_bucket``/``_sum``/``_count`` series under this base name."""
        return f"{self.name}_total" if self.kind is Kind.COUNTER else self.name


NUM_REQUESTS_RUNNING = VllmMetric(
    "vllm:num_requests_running", Kind.GAUGE, "Number of requests in model execution batches."
)
NUM_REQUESTS_WAITING = VllmMetric(
    "vllm:num_requests_waiting", Kind.GAUGE, "Number of requests waiting to be processed."
)
KV_CACHE_USAGE_PERC = VllmMetric("vllm:kv_cache_usage_perc", Kind.GAUGE, "KV-cache usage. 1 means 100 percent usage.")
PROMPT_TOKENS = VllmMetric("vllm:prompt_tokens", Kind.COUNTER, "Number of prefill tokens processed.")
GENERATION_TOKENS = VllmMetric("vllm:generation_tokens", Kind.COUNTER, "Number of generation tokens processed.")
REQUEST_SUCCESS = VllmMetric(
    "vllm:request_success",
    Kind.COUNTER,
    "Count of successfully processed requests.",
    labels=(*ENGINE_LABELS, FINISHED_REASON_LABEL),
)
TIME_TO_FIRST_TOKEN_SECONDS = VllmMetric(
    "vllm:time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Histogram of time to first token in seconds.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
    + (80.0, 160.0, 640.0, 2560.0),
)
INTER_TOKEN_LATENCY_SECONDS = VllmMetric(
    "vllm:inter_token_latency_seconds",
    Kind.HISTOGRAM,
    "Histogram of inter-token latency in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
E2E_REQUEST_LATENCY_SECONDS = VllmMetric(
    "vllm:e2e_request_latency_seconds",
    Kind.HISTOGRAM,
    "Histogram of e2e request latency in seconds.",
    buckets=(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)
    + (960.0, 1920.0, 7680.0),
)

ALL = (
    NUM_REQUESTS_RUNNING,
    NUM_REQUESTS_WAITING,
    KV_CACHE_USAGE_PERC,
    TIME_TO_FIRST_TOKEN_SECONDS,
    INTER_TOKEN_LATENCY_SECONDS,
    E2E_REQUEST_LATENCY_SECONDS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    REQUEST_SUCCESS,
)
