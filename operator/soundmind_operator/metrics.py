"""Every Prometheus metric the operator exports, by name, in one place: the exporter, the Helm
chart's dashboards and alert rules (and their tests) import the names from here.

Per-object series carry `namespace` and `training` (or `serving`) labels and are removed when the
object is deleted; operator-wide series are labelled by `kind`, `result` or `verb` only.
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

from soundmind.api.serving import ServingPhase
from soundmind.api.training import Phase

RECONCILE_TOTAL = "soundmind_operator_reconcile_total"
RECONCILE_DURATION = "soundmind_operator_reconcile_duration_seconds"
API_REQUESTS = "soundmind_operator_api_requests_total"
TRAININGS = "soundmind_trainings"
TRAINING_GPUS_REQUESTED = "soundmind_training_gpus_requested"
TRAINING_GPUS_RUNNING = "soundmind_training_gpus_running"
TRAINING_GPU_SECONDS = "soundmind_training_gpu_seconds"
TRAINING_RETRIES = "soundmind_training_retries_total"
TRAINING_PENDING_DURATION = "soundmind_training_pending_duration_seconds"
SERVINGS = "soundmind_servings"
SERVING_REPLICAS_DESIRED = "soundmind_serving_replicas_desired"
SERVING_REPLICAS_READY = "soundmind_serving_replicas_ready"
SERVING_REPLICAS_MIN = "soundmind_serving_replicas_min"
SERVING_REPLICAS_MAX = "soundmind_serving_replicas_max"

# Results of one reconcile pass.
RESULT_OK, RESULT_CONFLICT, RESULT_ERROR = "ok", "conflict", "error"

_TRAINING = ("namespace", "training")
_SERVING = ("namespace", "serving")

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
        self.api_requests = Counter(
            API_REQUESTS.removesuffix("_total"),
            "Requests of reconcile passes to the Kubernetes API, by HTTP method (watches excluded).",
            ["verb"],
            registry=registry,
        )
        self.trainings = _PhaseCount(
            Gauge(TRAININGS, "SoundMindTrainings by phase.", ["phase"], registry=registry), get_args(Phase)
        )
        self.servings = _PhaseCount(
            Gauge(SERVINGS, "SoundMindServings by phase.", ["phase"], registry=registry), get_args(ServingPhase)
        )
        self.replicas_desired = Gauge(
            SERVING_REPLICAS_DESIRED,
            "Replicas a serving's Deployment is asked for (by spec.replicas or the autoscaler).",
            _SERVING,
            registry=registry,
        )
        self.replicas_ready = Gauge(
            SERVING_REPLICAS_READY, "Ready replicas of a serving's Deployment.", _SERVING, registry=registry
        )
        # Beside desired, these say when the autoscaler has run out of room (an alert's condition),
        # and whether there is an autoscaler with room at all: min == max when autoscaling is off
        # or fixed, so an at-max alert stays silent for a serving that never scales.
        self.replicas_min = Gauge(
            SERVING_REPLICAS_MIN,
            "Fewest replicas a serving may run: autoscaling.minReplicas, or spec.replicas with autoscaling off.",
            _SERVING,
            registry=registry,
        )
        self.replicas_max = Gauge(
            SERVING_REPLICAS_MAX,
            "Most replicas a serving may run: autoscaling.maxReplicas, or spec.replicas with autoscaling off.",
            _SERVING,
            registry=registry,
        )
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

    def observe_training(
        self, namespace: str, training: str, *, phase: str | None, requested: int, running: int, gpu_seconds: float
    ) -> None:
        key = (namespace, training)
        self.gpus_requested.labels(*key).set(requested)
        self.gpus_running.labels(*key).set(running)
        self.gpu_seconds.labels(*key).set(gpu_seconds)
        # Exported at 0 from the first pass: a counter first scraped at 1 has increase() 0, and the
        # retrying alert (increase over 1h) would never see a training's first retry.
        self.retries.labels(*key)
        self.trainings.set(key, phase)

    def forget_training(self, namespace: str, training: str) -> None:
        key = (namespace, training)
        _remove(key, self.gpus_requested, self.gpus_running, self.gpu_seconds, self.retries)
        self.trainings.drop(key)

    def observe_serving(
        self, namespace: str, serving: str, *, phase: str | None, desired: int, ready: int, least: int, most: int
    ) -> None:
        key = (namespace, serving)
        self.replicas_desired.labels(*key).set(desired)
        self.replicas_min.labels(*key).set(least)
        self.replicas_max.labels(*key).set(most)
        self.replicas_ready.labels(*key).set(ready)
        self.servings.set(key, phase)

    def forget_serving(self, namespace: str, serving: str) -> None:
        key = (namespace, serving)
        _remove(key, self.replicas_desired, self.replicas_ready, self.replicas_min, self.replicas_max)
        self.servings.drop(key)


def _remove(key: tuple[str, str], *series) -> None:
    for metric in series:
        try:
            metric.remove(*key)
        except KeyError:
            pass


class _PhaseCount:
    """A gauge of objects by phase, every phase present (0 when none), from each object's last phase.
    Kept by moving one object between two counts: a pass costs the same with 1,000 objects as with 1."""

    def __init__(self, gauge: Gauge, phases: tuple[str, ...]):
        self.gauge = gauge
        self.phases = phases
        self._of: dict[tuple[str, str], str] = {}
        for phase in phases:
            gauge.labels(phase).set(0)

    def set(self, key: tuple[str, str], phase: str | None) -> None:
        if phase and self._of.get(key) != phase:  # a pass that decided no phase yet keeps the last one
            self._move(self._of.get(key), phase)
            self._of[key] = phase

    def drop(self, key: tuple[str, str]) -> None:
        self._move(self._of.pop(key, None), None)

    def _move(self, old: str | None, new: str | None) -> None:
        for phase, step in ((old, -1), (new, 1)):
            if phase in self.phases:
                self.gauge.labels(phase).inc(step)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve the default registry on http://address:port/metrics (a daemon thread)."""
    start_http_server(port, addr=address)
