"""vLLM's Prometheus metrics that SoundMind's dashboards and alerts read, by name, in one place.

The names, types and labels of vLLM 0.24.0's `vllm/v1/metrics/loggers.py` (the same in 0.33).
Counters are given as exposed, with the `_total` suffix prometheus_client appends; histograms by
their base name (`_bucket`, `_sum`, `_count` follow). Every series carries `model_name` (the served
model name) and `engine`; the operator's ServiceMonitor adds `namespace`, `app_kubernetes_io_instance`
(the serving) and `app_kubernetes_io_component` (`server`).
"""

from __future__ import annotations

# Gauges: the load signals the autoscaler follows (soundmind.api.serving.ScalingMetric).
NUM_REQUESTS_RUNNING = "vllm:num_requests_running"
NUM_REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"  # 0-1 (vllm:gpu_cache_usage_perc is gone)

# Histograms (seconds).
TIME_TO_FIRST_TOKEN = "vllm:time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "vllm:inter_token_latency_seconds"  # vllm:time_per_output_token_seconds is gone
E2E_REQUEST_LATENCY = "vllm:e2e_request_latency_seconds"

# Counters.
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
REQUEST_SUCCESS = "vllm:request_success_total"  # label finished_reason
# Multimodal items looked up in the processor cache: one per audio clip, and a SoundMind request
# carries one (the server runs with --limit-mm-per-prompt '{"audio": 1}').
MM_ITEMS = "vllm:mm_cache_queries_total"

GAUGES = (NUM_REQUESTS_RUNNING, NUM_REQUESTS_WAITING, KV_CACHE_USAGE)
HISTOGRAMS = (TIME_TO_FIRST_TOKEN, INTER_TOKEN_LATENCY, E2E_REQUEST_LATENCY)
COUNTERS = (PROMPT_TOKENS, GENERATION_TOKENS, REQUEST_SUCCESS, MM_ITEMS)

MODEL_NAME_LABEL = "model_name"
ENGINE_LABEL = "engine"
FINISHED_REASON_LABEL = "finished_reason"
