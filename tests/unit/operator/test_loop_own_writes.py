"""A loop's own status write wakes no extra pass, even when the watch delivers it before the pass
that made it has returned to the loop (no cluster).

The fuzzed-specs test (tests/integration/test_fuzzed_specs.py) found running trainings making about
two passes per resync with nothing changing: each pass writes its GPU-seconds, and on a local API
server the write's watch event reached the loop while the pass was still in its worker thread,
before the loop knew that version as its own."""

import asyncio
import logging
import threading
import time

from prometheus_client import CollectorRegistry

from soundmind_operator import loop, metrics

KIND, NAMESPACE, NAME = "SoundMindTraining", "ns", "alr"
RESYNC_SECONDS = 0.1
RUN_SECONDS = 1.0


class Stopped:
    """kopf.DaemonStopped's two faces the loop uses: truth, and an awaitable wait."""

    def __init__(self):
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        await self.event.wait()


class WritesStatusEveryPass:
    """A pass that writes status (a new resourceVersion) each time, as a running training's does,
    and whose write the watch delivers at once, on the loop's thread, while the pass still runs."""

    kind = KIND

    def __init__(self, event_loop: asyncio.AbstractEventLoop, wakeups: loop.Wakeups, body: dict):
        self.event_loop, self.wakeups, self.body = event_loop, wakeups, body
        self.passes = 0
        self.version = int(body["metadata"]["resourceVersion"])

    def reconcile(self, body, cache, logger) -> loop.Outcome:
        self.passes += 1
        self.version += 1
        written = str(self.version)
        delivered = threading.Event()

        def watch_event() -> None:  # what main.training_changed does with the write's event
            self.body["metadata"]["resourceVersion"] = written
            self.wakeups.wake(KIND, NAMESPACE, NAME, written)
            delivered.set()

        self.event_loop.call_soon_threadsafe(watch_event)
        delivered.wait(5)
        return loop.Outcome(body=body, written_version=written, periodic=True)  # GPU-seconds accrue

    def fetch(self, namespace, name):
        return self.body

    def record(self, namespace, name, outcome) -> None:
        pass

    def forget(self, namespace, name) -> None:
        pass


def test_a_pass_whose_own_write_arrives_first_is_not_repeated():
    async def scenario() -> tuple[int, float]:
        ctx = loop.LoopContext(metrics=metrics.OperatorMetrics(CollectorRegistry()), resync_seconds=RESYNC_SECONDS)
        body = {"metadata": {"resourceVersion": "1"}}
        reconciler = WritesStatusEveryPass(asyncio.get_running_loop(), ctx.wakeups, body)
        stopped = Stopped()
        began = time.monotonic()
        running = asyncio.create_task(
            loop.run(ctx, reconciler, NAMESPACE, NAME, stopped, logging.getLogger("test"), body, lambda: None)
        )
        await asyncio.sleep(RUN_SECONDS)
        stopped.event.set()
        await running
        return reconciler.passes, time.monotonic() - began

    passes, elapsed = asyncio.run(scenario())
    # One pass per resync (and the first); the bug made two: each write woke the loop at once.
    assert 2 <= passes <= elapsed / RESYNC_SECONDS + 1, passes


def test_a_change_by_someone_else_during_the_pass_still_wakes_the_loop():
    async def scenario() -> bool:
        wakeups = loop.Wakeups()
        event = wakeups.subscribe(KIND, NAMESPACE, NAME)
        key = (KIND, NAMESPACE, NAME)
        wakeups.pass_begins(key)
        wakeups.wake(KIND, NAMESPACE, NAME, "7")  # our write, delivered early
        wakeups.wake(KIND, NAMESPACE, NAME)  # a child changed
        wakeups.own_write(key, "7")
        return event.is_set()

    assert asyncio.run(scenario())
