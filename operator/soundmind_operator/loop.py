"""One reconcile loop per custom resource object, shared by every kind the operator serves.

Each object gets a kopf daemon that runs its kind's blocking reconcile pass in a worker thread (the
synchronous Kubernetes client; the event loop never blocks), then sleeps until something changes
(the object, or a child the watches deliver) or time alone may change the decision: every resync
while it changes continuously (a running training's GPU-seconds), when its next timeout or retry
falls due, and otherwise only once in `QUIET_RESYNCS` resyncs, as a safety net. A settled object
(a finished training) sleeps until an event wakes it. One loop per object means one writer per
object.

Everything that touches the loop's state (the wake-up events, the kopf indices read into a pass's
cache, kopf's event posting) runs on the event loop's thread; only the pass itself runs elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf

from soundmind_operator import metrics
from soundmind_operator.conditions import Event
from soundmind_operator.kube import Conflict, Kube, Manifest

# After a failed pass: retry soon, then back off (whatever the resync interval: when the API server
# is away every loop fails at once, and a short resync must not turn that into a storm). A change
# to the object or a child still wakes the loop at once.
ERROR_BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30)

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class Wakeups:
    """One asyncio.Event per running loop, set by watch events about the object or its children.
    asyncio.Event is not thread-safe: `wake` refuses to run off the event loop's thread."""

    events: dict[Key, asyncio.Event] = field(default_factory=dict)
    # The resourceVersions each loop's last pass wrote (its status, the children it applied or
    # created): their watch events are no news. Without this, every new object's first pass was
    # followed by a second one for nothing, woken by the children it had just made.
    own_writes: dict[Key, frozenset[str]] = field(default_factory=dict)
    # What set each loop's event since its pass began: the resourceVersion of the object or child
    # the watch delivered (None: unknown). The watch often delivers a pass's own write before the
    # pass has returned to the loop (the API server answers the write and sends the event at
    # once), too early to be recognised as its own; `own_writes_were` then takes that wake back.
    woken_by: dict[Key, set[str | None]] = field(default_factory=dict)

    def subscribe(self, kind: str, namespace: str, name: str) -> asyncio.Event:
        return self.events.setdefault((kind, namespace, name), asyncio.Event())

    def forget(self, kind: str, namespace: str, name: str) -> None:
        self.events.pop((kind, namespace, name), None)
        self.own_writes.pop((kind, namespace, name), None)
        self.woken_by.pop((kind, namespace, name), None)

    def wake(self, kind: str, namespace: str | None, name: str | None, resource_version: str | None = None) -> None:
        """Wake the loop of (kind, namespace, name), unless `resource_version` (of the object or a
        child) is one its last pass wrote."""
        asyncio.get_running_loop()  # RuntimeError in a worker thread: wake-up handlers must be async
        key = (kind, namespace or "", name or "")
        if resource_version is not None and resource_version in self.own_writes.get(key, ()):
            return
        event = self.events.get(key)
        if event is not None:
            self.woken_by.setdefault(key, set()).add(resource_version)
            event.set()

    def pass_begins(self, key: Key) -> None:
        """Changes from now on wake the next pass."""
        self.events[key].clear()
        self.woken_by.pop(key, None)

    def own_writes_were(self, key: Key, resource_versions: set[str]) -> None:
        """A pass wrote `resource_versions`: their watch events are no news, even if they came
        already."""
        self.own_writes[key] = frozenset(resource_versions)
        reasons = self.woken_by.get(key)
        if reasons is not None and resource_versions:
            reasons -= resource_versions
            if not reasons:
                self.events[key].clear()


@dataclass
class Outcome:
    """What a pass saw and decided, for the loop: the events to post and whether to wait."""

    body: Manifest | None  # None: the object is being deleted; the loop ends
    events: list[Event] = field(default_factory=list)
    written_version: str | None = None  # the resourceVersion the pass's status write produced
    settled: bool = False  # finished: nothing but a change wakes it
    # When time alone may change the decision: `periodic`, every resync (GPU-seconds accrue); else
    # in `recheck_after` seconds (a timeout falls due), or never (None: only a change does).
    periodic: bool = False
    recheck_after: float | None = None
    detail: Any = None  # the kind's own record of the pass (for its metrics)


class Reconciler(Protocol):
    kind: str
    kube: Kube  # its writes, journaled per pass (`Wakeups.own_writes`)

    def reconcile(self, body: Manifest, cache: Any, logger: logging.Logger) -> Outcome:
        """One pass (blocking; runs in a worker thread) over `body`, the object as the watch last
        delivered it, and `cache`, what `read_cache` returned."""

    def fetch(self, namespace: str, name: str) -> Manifest | None:
        """The object from the API (blocking): only when the watch lags behind the loop's own write."""

    def record(self, namespace: str, name: str, outcome: Outcome) -> None:
        """Metrics of a successful pass (on the event loop)."""

    def forget(self, namespace: str, name: str) -> None:
        """The object is deleted: drop its metrics."""


@dataclass
class LoopContext:
    metrics: metrics.OperatorMetrics
    resync_seconds: float
    wakeups: Wakeups = field(default_factory=Wakeups)
    # What kopf writes onto a new object as its loop starts: its finalizer. A first pass that
    # decided on the version before that write loses its status write (409) and is done again:
    # every object of a burst, twice.
    finalizer: str | None = None


async def run(
    ctx: LoopContext,
    reconciler: Reconciler,
    namespace: str,
    name: str,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger,
    body: Mapping[str, Any],
    read_cache: Callable[[], Any],
) -> None:
    """The object's loop, until kopf stops it (deletion, operator exit, peering pause). `body` is
    kopf's live view of the object, kept current by the watch: a pass reads it, not the API."""
    kind = reconciler.kind
    key = (kind, namespace, name)
    wake = ctx.wakeups.subscribe(kind, namespace, name)
    failures = 0
    superseded: str | None = None  # the version our last status write replaced
    try:
        await _adopted(body, ctx.finalizer)
        while not stopped:
            ctx.wakeups.pass_begins(key)
            delay: float | None = ctx.resync_seconds
            began = time.monotonic()
            try:
                snapshot = await _current(body, superseded, functools.partial(reconciler.fetch, namespace, name))
                if snapshot is None:
                    return
                outcome, written = await asyncio.to_thread(_journaled, reconciler, snapshot, read_cache(), logger)
            except Conflict:
                result, delay = metrics.RESULT_CONFLICT, 0.05  # re-read and decide again, at once
            except Exception:  # noqa: BLE001 - one bad pass must not end the loop; it is logged and counted
                logger.exception("reconcile of %s %s/%s failed", kind, namespace, name)
                result = metrics.RESULT_ERROR
                delay = ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS) - 1)]
                failures += 1
            else:
                result, failures = metrics.RESULT_OK, 0
                if outcome.body is None:
                    return
                ctx.wakeups.own_writes_were(key, written)  # the status write's version among them
                if outcome.written_version:
                    superseded = snapshot["metadata"]["resourceVersion"]
                for event in outcome.events:
                    kopf.event(outcome.body, type=event.type, reason=event.reason, message=event.message)
                reconciler.record(namespace, name, outcome)
                delay = _next_pass(ctx.resync_seconds, outcome)
            ctx.metrics.reconcile_total.labels(kind, result).inc()
            ctx.metrics.reconcile_duration.labels(kind, result).observe(time.monotonic() - began)
            await _sleep(wake, stopped, delay)
    finally:
        ctx.wakeups.forget(kind, namespace, name)


def _journaled(reconciler: Reconciler, body: Manifest, cache: Any, logger: logging.Logger) -> tuple[Outcome, set[str]]:
    """The pass (in a worker thread), and the resourceVersions its writes produced."""
    with reconciler.kube.journal() as written:
        return reconciler.reconcile(body, cache, logger), written


# An object that time alone does not change is still passed over once in this many resyncs (5
# minutes at the default 15 s): a safety net for a change a watch lost, not a schedule.
QUIET_RESYNCS = 20
# A timeout falls due this long after its moment: the API's timestamps have whole seconds, and the
# decisions compare strictly ("waited longer than").
DUE_MARGIN_SECONDS = 1.0


def _next_pass(resync_seconds: float, outcome: Outcome) -> float | None:
    """Seconds until the object's next pass if nothing changes (None: only a change)."""
    if outcome.settled:
        return None
    every = resync_seconds if outcome.periodic else resync_seconds * QUIET_RESYNCS
    if outcome.recheck_after is not None:
        return min(every, max(0.0, outcome.recheck_after) + DUE_MARGIN_SECONDS)
    return every


# How long a pass waits for the watch to deliver the loop's own last write before reading the API.
WATCH_LAG_SECONDS = 2.0


async def _current(
    body: Mapping[str, Any], superseded: str | None, fetch: Callable[[], Manifest | None]
) -> Manifest | None:
    """A copy of the object to decide on: kopf's live view, unless it still shows the version our
    own last write replaced (deciding on that would undo the write's decisions, e.g. start a retry
    twice); then, once the watch has had `WATCH_LAG_SECONDS` to catch up, the API's. None: gone."""
    waited = 0.0
    while (body.get("metadata") or {}).get("resourceVersion") == superseded:
        if waited >= WATCH_LAG_SECONDS:
            return await asyncio.to_thread(fetch)
        await asyncio.sleep(0.02)
        waited += 0.02
    return _copied(body)  # on the loop's thread: kopf replaces the live view in place


def _copied(body: Mapping[str, Any]) -> Manifest:
    """A deep copy of `body` without metadata.managedFields (no pass reads them): through JSON, a
    third of `copy.deepcopy`'s time on a typical object, on the event loop's thread every pass."""
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return json.loads(json.dumps({**body, "metadata": metadata}))


# How long a new object's first pass waits for kopf's own write onto it (see LoopContext).
KOPF_ADOPTION_SECONDS = 5.0


async def _adopted(body: Mapping[str, Any], finalizer: str | None) -> None:
    """Until kopf's live view of the object carries `finalizer` (at once for an object kopf handled
    before: an operator restart), or `KOPF_ADOPTION_SECONDS` pass."""
    waited = 0.0
    while waited < KOPF_ADOPTION_SECONDS:
        metadata = body.get("metadata") or {}
        if metadata.get("deletionTimestamp") or not finalizer or finalizer in (metadata.get("finalizers") or []):
            return
        await asyncio.sleep(0.02)
        waited += 0.02


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float | None) -> None:
    """Until woken, stopped, or `seconds` pass (None: no time limit)."""

    async def until_stopped() -> None:
        await stopped.wait()

    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(until_stopped())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
