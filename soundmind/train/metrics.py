"""The trainer's Prometheus metrics, served by the head on contract.METRICS_PORT.

The names are defined here only: the exporter below, the dashboards' and alerts' tests import them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

STEP = "soundmind_train_step"
TOTAL_STEPS = "soundmind_train_total_steps"
EPOCH = "soundmind_train_epoch"
REWARD_MEAN = "soundmind_train_reward_mean"
VAL_ACCURACY = "soundmind_train_val_accuracy"
RESPONSE_LENGTH = "soundmind_train_response_length"
THROUGHPUT = "soundmind_train_throughput_tokens_per_second"
LAST_CHECKPOINT_STEP = "soundmind_train_last_checkpoint_step"
MALFORMED_LOG_LINES = "soundmind_train_log_malformed_lines_total"
STATUS_PATCH_FAILURES = "soundmind_train_status_patch_failures_total"

ALL = (
    STEP,
    TOTAL_STEPS,
    EPOCH,
    REWARD_MEAN,
    VAL_ACCURACY,
    RESPONSE_LENGTH,
    THROUGHPUT,
    LAST_CHECKPOINT_STEP,
    MALFORMED_LOG_LINES,
    STATUS_PATCH_FAILURES,
)


class TrainMetrics:
    """One run's metrics in their own registry (so tests can hold several at once)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=self.registry)

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, registry=self.registry)

        self.step = gauge(STEP, "Last completed GRPO step (verl's global step).")
        self.total_steps = gauge(TOTAL_STEPS, "GRPO steps in the whole run (train rows // batch size × epochs).")
        self.epoch = gauge(EPOCH, "Current epoch, counted from 1.")
        self.reward_mean = gauge(REWARD_MEAN, "Mean SoundMind-RL reward of the last step (verl critic/score/mean).")
        self.val_accuracy = gauge(VAL_ACCURACY, "Last validation accuracy, 0-1 (verl val-core/<source>/acc/mean@N).")
        self.response_length = gauge(RESPONSE_LENGTH, "Mean response length in tokens of the last step.")
        self.throughput = gauge(THROUGHPUT, "Tokens per second per GPU in the last step (verl perf/throughput).")
        self.last_checkpoint_step = gauge(LAST_CHECKPOINT_STEP, "Step of the newest complete checkpoint.")
        self.malformed_log_lines = counter(MALFORMED_LOG_LINES, "verl log lines that could not be read (skipped).")
        self.status_patch_failures = counter(STATUS_PATCH_FAILURES, "Failed status patches (retried with backoff).")

    def serve(self, port: int, address: str = "0.0.0.0"):
        """Start the HTTP endpoint in a daemon thread; returns the server (`server_port`, `shutdown()`)."""
        server, _thread = start_http_server(port, address, registry=self.registry)
        return server
