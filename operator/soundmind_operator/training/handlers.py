"""The kopf side of SoundMindTraining: one reconcile loop per training, woken by changes.

Each training gets a kopf daemon that runs `reconcile.reconcile` in a worker thread (it blocks on
the Kubernetes client; the event loop never does), then sleeps until something changes (the
training, its Job, its pods) or the resync interval passes (pending timeouts, stall detection and
GPU-seconds are about time, not events). One loop per training means one writer per training.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import kopf

from soundmind_operator import metrics
from soundmind_operator.kube import Conflict, Kube
from soundmind_operator.training import names, observe, reconcile

KIND = "SoundMindTraining"
# After a failed pass: retry soon, then back off to the resync interval.
ERROR_BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30)


@dataclass
class Wakeups:
    """One asyncio.Event per running training loop, set by watch events about the training or
    its children. Lives on the event loop's thread."""

    events: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def subscribe(self, namespace: str, name: str) -> asyncio.Event:
        return self.events.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self.events.pop((namespace, name), None)

    def wake(self, namespace: str | None, name: str | None) -> None:
        event = self.events.get((namespace or "", name or ""))
        if event is not None:
            event.set()


@dataclass
class TrainingContext:
    kube: Kube
    metrics: metrics.OperatorMetrics
    resync_seconds: float
    wakeups: Wakeups = field(default_factory=Wakeups)


async def run(ctx: TrainingContext, namespace: str, name: str, stopped: kopf.DaemonStopped, logger) -> None:
    """The training's loop, until kopf stops it (deletion, operator exit, peering pause)."""
    wake = ctx.wakeups.subscribe(namespace, name)
    failures = 0
    try:
        while not stopped:
            wake.clear()  # changes from now on wake the next pass
            delay = ctx.resync_seconds
            began = time.monotonic()
            try:
                outcome = await asyncio.to_thread(reconcile.reconcile, ctx.kube, namespace, name, logger)
            except Conflict:
                result, delay = metrics.RESULT_CONFLICT, 0.05  # re-read and decide again, at once
            except Exception:  # noqa: BLE001 - one bad pass must not end the loop; it is logged and counted
                logger.exception("reconcile of %s/%s failed", namespace, name)
                result = metrics.RESULT_ERROR
                delay = min(ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS) - 1)], ctx.resync_seconds)
                failures += 1
            else:
                result, failures = metrics.RESULT_OK, 0
                if outcome.body is None:
                    return
                _record(ctx, namespace, name, outcome)
            elapsed = time.monotonic() - began
            ctx.metrics.reconcile_total.labels(KIND, result).inc()
            ctx.metrics.reconcile_duration.labels(KIND, result).observe(elapsed)
            await _sleep(wake, stopped, delay)
    finally:
        ctx.wakeups.forget(namespace, name)


def _record(ctx: TrainingContext, namespace: str, name: str, outcome: reconcile.Outcome) -> None:
    for event in outcome.events:
        kopf.event(outcome.body, type=event.type, reason=event.reason, message=event.message)
    decision, spec = outcome.decision, outcome.spec
    if decision is None or spec is None:
        return
    status = decision.status
    if decision.retried:
        ctx.metrics.retries.labels(namespace, name).inc()
    if decision.pending_seconds is not None:
        ctx.metrics.pending_duration.observe(decision.pending_seconds)
    running = spec.total_gpus if status.get("phase") == observe.RUNNING else 0
    ctx.metrics.observe_training(
        namespace,
        name,
        phase=status.get("phase"),
        requested=spec.total_gpus,
        running=running,
        gpu_seconds=status.get("gpuSeconds") or 0.0,
    )


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    async def until_stopped() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def wake_owner(ctx: TrainingContext, namespace: str | None, labels: dict[str, str]) -> None:
    """A Job or pod of a training changed: wake that training's loop."""
    ctx.wakeups.wake(namespace, labels.get(names.INSTANCE_LABEL))


def forget(ctx: TrainingContext, namespace: str, name: str, logger: logging.Logger) -> None:
    ctx.metrics.forget_training(namespace, name)
    logger.info("training %s/%s deleted; its children go with it (owner references)", namespace, name)
