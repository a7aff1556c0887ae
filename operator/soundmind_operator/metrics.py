"""Every Prometheus metric the operator exports, by name, in one place: the exporter, the Helm
chart's dashboards and alert rules (and their tests) import the names from here.

Per-training series carry `namespace` and `training` labels and are removed when the training is
deleted; operator-wide series are labelled by `kind` and `result` only.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from soundmind.api.training import Phase

RECONCILE_TOTAL = "soundmind_operator_reconcile_total"
RECONCILE_DURATION = "soundmind_operator_reconcile_duration_seconds"
TRAININGS = "soundmind_trainings"
TRAINING_GPUS_REQUESTED = "soundmind_training_gpus_requested"
TRAINING_GPUS_RUNNING = "soundmind_training_gpus_running"
TRAINING_GPU_SECONDS = "soundmind_training_gpu_seconds"
TRAINING_RETRIES = "soundmind_training_retries_total"
TRAINING_PENDING_DURATION = "soundmind_training_pending_duration_seconds"

# Results of one reconcile pass.
RESULT_OK, RESULT_CONFLICT, RESULT_ERROR = "ok", "conflict", "error"

_TRAINING = ("namespace", "training")

disable_created_metrics()  # no `*_created` series next to every counter and histogram


class OperatorMetrics:
    """The operator's metrics in one registry (a fresh one per test; the default one in production)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.registry = registry
        self.reconcile_total = Counter(
            RECONCILE_TOTAL, "Reconcile passes, by resource kind and result.", ["kind", "result"], registry=registry
        )
        self.reconcile_duration = Histogram(
            RECONCILE_DURATION,
            "Duration of one reconcile pass (reads, writes and the status patch).",
            ["kind", "result"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.trainings = Gauge(TRAININGS, "SoundMindTrainings by phase.", ["phase"], registry=registry)
        self.gpus_requested = Gauge(
            TRAINING_GPUS_REQUESTED, "GPUs a training asks for (nodes × gpusPerNode).", _TRAINING, registry=registry
        )
        self.gpus_running = Gauge(
            TRAINING_GPUS_RUNNING, "GPUs held by a training's running pods.", _TRAINING, registry=registry
        )
        self.gpu_seconds = Gauge(
            TRAINING_GPU_SECONDS, "GPU-seconds used by a training over all attempts.", _TRAINING, registry=registry
        )
        # prometheus_client appends _total to counters; give it the name without.
        self.retries = Counter(
            TRAINING_RETRIES.removesuffix("_total"),
            "Whole-group restarts after a failed attempt.",
            _TRAINING,
            registry=registry,
        )
        self.pending_duration = Histogram(
            TRAINING_PENDING_DURATION,
            "Time from an attempt's Job creation until all its pods run.",
            buckets=(1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600),
            registry=registry,
        )
        self._phases: dict[tuple[str, str], str] = {}

    def observe_training(
        self, namespace: str, training: str, *, phase: str | None, requested: int, running: int, gpu_seconds: float
    ) -> None:
        key = (namespace, training)
        self.gpus_requested.labels(*key).set(requested)
        self.gpus_running.labels(*key).set(running)
        self.gpu_seconds.labels(*key).set(gpu_seconds)
        if phase:
            self._phases[key] = phase
        self._publish_phases()

    def forget_training(self, namespace: str, training: str) -> None:
        key = (namespace, training)
        for gauge in (self.gpus_requested, self.gpus_running, self.gpu_seconds, self.retries):
            try:
                gauge.remove(*key)
            except KeyError:
                pass
        self._phases.pop(key, None)
        self._publish_phases()

    def _publish_phases(self) -> None:
        counts: dict[str, int] = {}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase in get_args(Phase):
            self.trainings.labels(phase).set(counts.get(phase, 0))


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve the default registry on http://address:port/metrics (a daemon thread)."""
    start_http_server(port, addr=address)
