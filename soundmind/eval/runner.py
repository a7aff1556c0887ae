"""Sends EvalItems to an OpenAI-compatible `/v1/chat/completions` endpoint and scores the answers.

Bounded concurrency (a fixed pool of workers fed through a bounded queue, so memory does not grow
with the data set); transport errors, 429 and 5xx are retried with exponential backoff; after
`max_consecutive_failures` requests in a row fail for good, the endpoint is taken to be down and
the remaining rows are not sent (they are counted, not lost silently). `timeout_s` is a deadline for
each request as a whole (a server that trickles bytes cannot hold it longer). On SIGINT or SIGTERM
nothing more is sent, requests in flight are cancelled, and the result so far comes back at once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from soundmind.errors import UsageError
from soundmind.eval.requests import EvalItem, chat_request
from soundmind.reward import compute_score

BACKOFF_CAP_S = 10.0


@dataclass(frozen=True)
class Settings:
    endpoint: str
    model: str
    concurrency: int = 16
    retries: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 600.0
    max_tokens: int = 2048
    temperature: float = 0.0
    max_consecutive_failures: int = 32

    @property
    def url(self) -> str:
        base = self.endpoint.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


def check_endpoint(endpoint: str) -> str:
    """`endpoint` when it is an http(s) base URL with a host; UsageError saying what is wrong."""
    example = "e.g. http://soundmind:8000"
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise UsageError(f"--endpoint {endpoint!r} is not a valid URL ({exc}); {example}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"--endpoint {endpoint!r} must start with http:// or https://; {example}")
    if not parts.hostname:
        raise UsageError(f"--endpoint {endpoint!r} has no host; {example}")
    if parts.query or parts.fragment:
        raise UsageError(f"--endpoint {endpoint!r} must be a base URL, without '?' or '#'; {example}")
    try:
        httpx.URL(endpoint)
    except httpx.InvalidURL as exc:
        raise UsageError(f"--endpoint {endpoint!r} is not a valid URL ({exc}); {example}") from None
    return endpoint


@dataclass
class Outcome:
    index: int
    id: str
    gold: str
    pred: str | None = None
    correct: bool = False
    format_ok: bool = False
    score: float = 0.0
    latency_s: float | None = None  # of the successful attempt
    attempts: int = 0
    error: str | None = None  # why the request failed for good; None when it succeeded
    retryable: bool = False  # whether that last error was one that is retried


@dataclass
class RunResult:
    total_rows: int
    outcomes: list[Outcome] = field(default_factory=list)
    wall_s: float = 0.0
    stopped: str | None = None  # why the run stopped before sending every row
    signal: int | None = None  # the signal that interrupted the run, if one did


class _Failure(Exception):
    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.reason, self.retryable = reason, retryable


async def _complete(client: httpx.AsyncClient, settings: Settings, item: EvalItem) -> str:
    body = chat_request(item, settings.model, settings.max_tokens, settings.temperature)
    try:
        async with asyncio.timeout(settings.timeout_s):
            response = await client.post(settings.url, json=body)
    except (TimeoutError, httpx.TimeoutException):
        raise _Failure(f"timeout (no complete response within {settings.timeout_s:g} s)", retryable=True) from None
    except httpx.TransportError as exc:
        raise _Failure(f"connection error ({type(exc).__name__})", retryable=True) from None
    if response.status_code != 200:
        reason = f"HTTP {response.status_code}"
        if response.status_code == 413:
            reason += " (request too large: raise the server's request-body limit for base64 audio)"
        retryable = response.status_code == 429 or response.status_code >= 500
        raise _Failure(reason, retryable=retryable)
    try:
        choice = response.json()["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Failure("malformed response (no choices[0].message.content)", retryable=False) from None
    if not isinstance(content, str):
        finish = choice.get("finish_reason") if isinstance(choice, dict) else None
        raise _Failure(
            f"server fault: choices[0].message.content is {type(content).__name__ if content is not None else 'null'}"
            f" (finish_reason {finish!r}), not text",
            retryable=False,
        )
    return content


async def _attempt(client: httpx.AsyncClient, settings: Settings, item: EvalItem) -> Outcome:
    outcome = Outcome(index=item.index, id=item.id, gold=item.gold)
    for attempt in range(settings.retries + 1):
        outcome.attempts = attempt + 1
        started = time.perf_counter()
        try:
            text = await _complete(client, settings, item)
        except _Failure as failure:
            outcome.error, outcome.retryable = failure.reason, failure.retryable
            if not failure.retryable or attempt == settings.retries:
                return outcome
            delay = min(BACKOFF_CAP_S, settings.backoff_s * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            continue
        outcome.latency_s = time.perf_counter() - started
        outcome.error = None
        scored = compute_score("soundmind/alr", text, item.gold)
        outcome.pred = scored["pred"] or None
        outcome.correct = scored["acc"] == 1.0
        outcome.format_ok = scored["format_ok"]
        outcome.score = scored["score"]
        return outcome
    raise AssertionError("unreachable")


async def evaluate(
    items: Iterable[EvalItem],
    total_rows: int,
    settings: Settings,
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
) -> RunResult:
    """Evaluates every item (or stops early, see the module doc); outcomes come back in row order."""
    result = RunResult(total_rows=total_rows)
    queue: asyncio.Queue[EvalItem | None] = asyncio.Queue(maxsize=2 * settings.concurrency)
    consecutive_failures = 0
    endpoint_down = False  # then queued rows are drained unsent; a bad row only stops the reading
    started = time.perf_counter()

    async def work(client: httpx.AsyncClient) -> None:
        nonlocal consecutive_failures, endpoint_down
        while (item := await queue.get()) is not None:
            if endpoint_down:
                continue
            outcome = await _attempt(client, settings, item)
            result.outcomes.append(outcome)
            consecutive_failures = consecutive_failures + 1 if outcome.error else 0
            if consecutive_failures >= settings.max_consecutive_failures and not endpoint_down:
                endpoint_down = True
                result.stopped = (
                    f"{consecutive_failures} requests in a row failed (last: {outcome.error}); "
                    f"endpoint {settings.url} looks down"
                )

    async def produce(workers: int) -> None:
        try:
            for item in items:
                if result.stopped:
                    break
                await queue.put(item)
        except (ValueError, OSError) as exc:  # a bad row (RowError) or an unreadable file: stop, keep results
            result.stopped = str(exc)
        for _ in range(workers):
            await queue.put(None)

    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    async with httpx.AsyncClient(timeout=settings.timeout_s, limits=limits) as client:
        tasks = [asyncio.create_task(work(client)) for _ in range(settings.concurrency)]
        tasks.append(asyncio.create_task(produce(settings.concurrency)))

        def interrupt(signum: int) -> None:
            result.signal = signum
            result.stopped = f"interrupted by {signal.Signals(signum).name}"
            for task in tasks:
                task.cancel()  # the producer stops sending; workers drop their requests in flight

        handled = []
        for signum in stop_signals:
            try:
                loop.add_signal_handler(signum, interrupt, signum)
                handled.append(signum)
            except (ValueError, RuntimeError):  # not the main thread: the caller handles signals
                pass
        try:
            finished = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
        for outcome in finished:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                raise outcome
    result.wall_s = time.perf_counter() - started
    result.outcomes.sort(key=lambda outcome: outcome.index)
    return result
