"""vLLM's Prometheus metrics, in one place: the serving contract that the autoscaling query
(`soundmind.api.serving.ScalingMetric`), the dashboards and alerts (`hack/charts`) and the vLLM
stand-in's exporter (`soundmind.serve.standin`) all use.

The names, types, labels and buckets of vLLM 0.24.0's `vllm/v1/metrics/loggers.py` (the same in
0.33). `tests/unit/serve/test_metrics_contract.py` reads that file from the pinned wheel and fails
when vLLM renames, retypes or relabels one of them: a rename breaks our build, not a user's
dashboard or autoscaler.

Each constant is the series name a query uses (a :class:`VllmMetric` is a ``str``): counters with
the ``_total`` suffix prometheus_client appends, histograms by their base name (``_bucket``,
``_sum``, ``_count`` follow). ``registered_name`` is the name as vLLM registers it. Every series
carries ``model_name`` (the served model name) and ``engine``; the operator's ServiceMonitor adds
``namespace``, ``app_kubernetes_io_instance`` (the serving) and ``app_kubernetes_io_component``
(``server``).
"""

from __future__ import annotations

import enum

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


class VllmMetric(str):
    """A series name, with how vLLM registers the metric behind it."""

    registered_name: str
    kind: Kind
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # histograms only

    def __new__(
        cls,
        registered_name: str,
        kind: Kind,
        documentation: str,
        labels: tuple[str, ...] = ENGINE_LABELS,
        buckets: tuple[float, ...] = (),
    ) -> VllmMetric:
        metric = super().__new__(cls, f"{registered_name}_total" if kind is Kind.COUNTER else registered_name)
        metric.registered_name, metric.kind, metric.documentation = registered_name, kind, documentation
        metric.labels, metric.buckets = labels, buckets
        return metric


# Gauges: the load signals the autoscaler follows (soundmind.api.serving.ScalingMetric).
NUM_REQUESTS_RUNNING = VllmMetric(
    "vllm:num_requests_running", Kind.GAUGE, "Number of requests in model execution batches."
)
NUM_REQUESTS_WAITING = VllmMetric(
    "vllm:num_requests_waiting", Kind.GAUGE, "Number of requests waiting to be processed."
)
# 0-1 (vllm:gpu_cache_usage_perc is gone)
KV_CACHE_USAGE = VllmMetric("vllm:kv_cache_usage_perc", Kind.GAUGE, "KV-cache usage. 1 means 100 percent usage.")

# Histograms (seconds).
TIME_TO_FIRST_TOKEN = VllmMetric(
    "vllm:time_to_first_token_seconds",
    Kind.HISTOGRAM,
    "Histogram of time to first token in seconds.",
    buckets=(0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
    + (80.0, 160.0, 640.0, 2560.0),
)
INTER_TOKEN_LATENCY = VllmMetric(  # vllm:time_per_output_token_seconds is gone
    "vllm:inter_token_latency_seconds",
    Kind.HISTOGRAM,
    "Histogram of inter-token latency in seconds.",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0),
)
E2E_REQUEST_LATENCY = VllmMetric(
    "vllm:e2e_request_latency_seconds",
    Kind.HISTOGRAM,
    "Histogram of e2e request latency in seconds.",
    buckets=(0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)
    + (960.0, 1920.0, 7680.0),
)

# Counters.
PROMPT_TOKENS = VllmMetric("vllm:prompt_tokens", Kind.COUNTER, "Number of prefill tokens processed.")
GENERATION_TOKENS = VllmMetric("vllm:generation_tokens", Kind.COUNTER, "Number of generation tokens processed.")
REQUEST_SUCCESS = VllmMetric(
    "vllm:request_success",
    Kind.COUNTER,
    "Count of successfully processed requests.",
    labels=(*ENGINE_LABELS, FINISHED_REASON_LABEL),
)
# Multimodal items looked up in the processor cache: one per audio clip, and a SoundMind request
# carries one (the server runs with --limit-mm-per-prompt '{"audio": 1}').
MM_ITEMS = VllmMetric(
    "vllm:mm_cache_queries", Kind.COUNTER, "Multi-modal cache queries, in terms of number of queried items."
)

GAUGES = (NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, KV_CACHE_USAGE)
HISTOGRAMS = (TIME_TO_FIRST_TOKEN, INTER_TOKEN_LATENCY, E2E_REQUEST_LATENCY)
COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, REQUEST_SUCCESS, MM_ITEMS)
ALL = GAUGES + HISTOGRAMS + COUNTERS
