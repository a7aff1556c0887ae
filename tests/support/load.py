"""A bounded load generator: closed-loop clients sending audio chat requests to a serving's replicas.

Each client sends one request at a time, and its next as soon as the answer comes; the number of
clients is set while it runs (:meth:`LoadGenerator.set_clients`), so the load is a steady number of
requests in flight. Each request goes to the replica with the fewest of this generator's requests
in flight, as a load-aware gateway (vLLM's router, an inference gateway) spreads them; new
replicas get their share as soon as they serve. Loopback only, and bounded both ways: at most
``max_requests`` requests in all, and none sent after ``deadline_seconds``.
"""

from __future__ import annotations

import itertools
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable

REQUEST_TIMEOUT_SECONDS = 60


class LoadGenerator:
    def __init__(
        self, endpoints: Callable[[], list[str]], bodies: list[bytes], *, max_requests: int, deadline_seconds: float
    ):
        if not bodies:
            raise ValueError("no request bodies to send")
        self._endpoints = endpoints
        self._bodies = itertools.cycle(bodies)
        self.max_requests = max_requests
        self._deadline = time.monotonic() + deadline_seconds
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.clients = 0
        self.sent = self.answered = self.failed = 0
        self.errors: Counter[str] = Counter()

    def set_clients(self, count: int) -> None:
        """Run ``count`` clients: more start at once; extra ones stop after their current request."""
        with self._lock:
            self.clients = count
            while len(self._threads) < count:
                index = len(self._threads)
                thread = threading.Thread(target=self._client, args=(index,), name=f"load-{index}", daemon=True)
                self._threads.append(thread)
                thread.start()
            # A thread whose index is below the count again (after a decrease) was ended: restart it.
            for index, thread in enumerate(self._threads[:count]):
                if not thread.is_alive():
                    self._threads[index] = threading.Thread(target=self._client, args=(index,), daemon=True)
                    self._threads[index].start()

    def stop(self) -> None:
        """No new requests; wait (bounded) for those in flight."""
        self._stopping.set()
        with self._lock:
            self.clients = 0
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_SECONDS)

    @property
    def exhausted(self) -> bool:
        return self.sent >= self.max_requests or time.monotonic() > self._deadline

    def _take(self, index: int) -> tuple[str, bytes] | None:
        """The next request's replica and body; None when this client should stop."""
        while True:
            with self._lock:
                if self._stopping.is_set() or index >= self.clients or self.exhausted:
                    return None
                endpoints = self._endpoints()
                if endpoints:
                    url = min(endpoints, key=lambda u: self._in_flight[u])
                    self._in_flight[url] += 1
                    self.sent += 1
                    return url, next(self._bodies)
            time.sleep(0.2)  # no replica serves yet

    def _client(self, index: int) -> None:
        while (taken := self._take(index)) is not None:
            url, body = taken
            request = urllib.request.Request(
                f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"}, method="POST"
            )
            error = None
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:
                    response.read()
            except urllib.error.HTTPError as failure:
                error = f"HTTP {failure.code}"
            except OSError as failure:
                error = type(failure).__name__
            with self._lock:
                self._in_flight[url] -= 1
                if error:
                    self.failed += 1
                    self.errors[error] += 1
                else:
                    self.answered += 1
            if error:
                time.sleep(0.2)
