"""A stand-in for `vllm serve` with no model and no GPU: the same HTTP surface, honest queueing.

What it serves, as vLLM 0.24's OpenAI-compatible server does for the parts SoundMind uses:

* ``POST /v1/chat/completions``: chat messages with ``input_audio`` parts (base64 WAV); the model
  must be the served model name (else 404, as vLLM answers); no streaming.
* ``GET /v1/models``, ``GET /health`` and ``GET /metrics``, the last with vLLM's metric names, types
  and labels from the serving contract (:mod:`soundmind.api.vllm_metrics`).

It behaves like a server of finite capacity: at most ``max_num_seqs`` requests run at once and the
rest wait, first come first served (``vllm:num_requests_waiting`` counts them); a request runs for
``prefill_seconds_per_audio_second`` per second of its audio, then ``seconds_per_output_token`` per
output token. So waiting requests pile up when load exceeds capacity and drain when replicas are
added, which is what an autoscaler on vLLM's queue reacts to. ``vllm:kv_cache_usage_perc`` is the
fraction of the running slots in use.

Answers are in the format the reward parses: a ``<think>`` block, then ``Answer: <label>`` on the
last line. Given ``--answers`` (a prepared parquet, `soundmind data prepare`), it knows each audio
clip's ground truth and answers right for a fraction ``--accuracy`` of the clips (the same clips
every time: the choice is a hash of the audio); without it, the label is that hash's coin flip.

Run: ``python -m soundmind.serve.standin --port 8000 --served-model-name soundmind``; it prints
``serving http://HOST:PORT`` once it listens (``--port 0`` picks a free port). Or, as a serving pod
runs vLLM: ``python -m soundmind.serve.standin serve MODEL [vllm serve flags]`` (the stand-in image's
``vllm`` command), which takes what it simulates from vLLM's flags (:func:`vllm_serve_arguments`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import signal
import sys
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from soundmind.api import vllm_metrics as metrics
from soundmind.prompt import ENTAILED, NOT_ENTAILED
from soundmind.serve.render import PORT

READY_LINE = "serving"  # the first line on stdout: "serving http://HOST:PORT"
AUDIO_TOKENS_PER_SECOND = 25  # Qwen2.5-Omni's audio encoder: one token per 40 ms of audio
TEXT_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Behaviour:
    """How the stand-in's capacity and answers are simulated."""

    served_model_name: str = "soundmind"
    model: str = "Qwen/Qwen2.5-Omni-7B"  # what /v1/models reports as the root
    max_model_len: int = 32768
    max_num_seqs: int = 4
    prefill_seconds_per_audio_second: float = 0.05
    seconds_per_output_token: float = 0.02
    output_tokens: int = 48
    accuracy: float = 0.8


class RequestError(Exception):
    """A request vLLM would refuse; ``status`` and the message are what it answers."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.kind = status, kind


class Scheduler:
    """At most ``max_num_seqs`` requests run; the others wait in arrival order."""

    def __init__(self, max_num_seqs: int, on_change):
        self.max_num_seqs = max_num_seqs
        self._on_change = on_change  # called with (running, waiting) under the lock
        self._lock = threading.Condition()
        self._queue: deque[object] = deque()
        self.running = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        ticket = object()
        with self._lock:
            self._queue.append(ticket)
            self._changed()
            while self._queue[0] is not ticket or self.running >= self.max_num_seqs:
                self._lock.wait()
            self._queue.popleft()
            self.running += 1
            self._changed()
            self._lock.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
                self._changed()
                self._lock.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def _changed(self) -> None:
        self._on_change(self.running, len(self._queue))


class Exporter:
    """vLLM's metrics (the serving contract), for one engine (index 0) of one served model."""

    def __init__(self, served_model_name: str):
        self.registry = CollectorRegistry()
        labels = {metrics.MODEL_NAME_LABEL: served_model_name, metrics.ENGINE_LABEL: "0"}

        def make(metric: metrics.VllmMetric):
            cls = {metrics.Kind.GAUGE: Gauge, metrics.Kind.COUNTER: Counter, metrics.Kind.HISTOGRAM: Histogram}
            extra = {"buckets": metric.buckets} if metric.kind is metrics.Kind.HISTOGRAM else {}
            family = cls[metric.kind](
                metric.registered_name, metric.documentation, metric.labels, registry=self.registry, **extra
            )
            if metric.labels == metrics.ENGINE_LABELS:
                return family.labels(**labels)
            return family, labels

        self.running = make(metrics.NUM_REQUESTS_RUNNING)
        self.waiting = make(metrics.NUM_REQUESTS_WAITING)
        self.kv_cache_usage = make(metrics.KV_CACHE_USAGE)
        self.time_to_first_token = make(metrics.TIME_TO_FIRST_TOKEN)
        self.inter_token_latency = make(metrics.INTER_TOKEN_LATENCY)
        self.e2e_latency = make(metrics.E2E_REQUEST_LATENCY)
        self.prompt_tokens = make(metrics.PROMPT_TOKENS)
        self.generation_tokens = make(metrics.GENERATION_TOKENS)
        self.mm_items = make(metrics.MM_ITEMS)
        success, labels = make(metrics.REQUEST_SUCCESS)
        # vLLM creates every finished_reason series up front, so each reads 0 before its first request.
        self.request_success = {
            reason: success.labels(**labels, **{metrics.FINISHED_REASON_LABEL: reason})
            for reason in metrics.FINISHED_REASONS
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class Prompt:
    audio_seconds: float
    audio_key: str  # sha256 of the first audio clip's base64 data: what --answers is keyed by
    tokens: int  # estimated prompt tokens: text and audio
    audio_clips: int


def read_prompt(body: dict[str, Any]) -> Prompt:
    """The audio and size of a chat request's messages; RequestError for what vLLM would refuse."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages: a non-empty list of chat messages is required")
    seconds, key, text_chars, clips = 0.0, "", 0, 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RequestError(400, "each message needs a content string or a list of content parts")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text_chars += len(part.get("text") or "")
            elif kind == "input_audio":
                audio = part.get("input_audio") or {}
                data = audio.get("data") or ""
                seconds += _wav_seconds(data, audio.get("format"))
                key = key or hashlib.sha256(data.encode()).hexdigest()
                clips += 1
            else:
                raise RequestError(400, f"unsupported content part type {kind!r} (text and input_audio are served)")
    tokens = text_chars // TEXT_CHARS_PER_TOKEN + round(seconds * AUDIO_TOKENS_PER_SECOND)
    return Prompt(seconds, key, max(tokens, 1), clips)


def _wav_seconds(data: str, audio_format: str | None) -> float:
    if audio_format != "wav":
        raise RequestError(400, f"input_audio.format {audio_format!r}: the stand-in decodes wav only")
    try:
        with wave.open(io.BytesIO(base64.b64decode(data, validate=True))) as clip:
            return clip.getnframes() / clip.getframerate()
    except (binascii.Error, wave.Error, EOFError) as error:
        raise RequestError(400, f"input_audio: not base64 WAV data ({error})") from None


def _fraction(key: str) -> float:
    """A number in [0, 1) fixed by the key: the same clip is answered the same way every time."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def choose_answer(audio_key: str, answers: dict[str, str], accuracy: float) -> str:
    """The label the stand-in answers with: right for a fraction ``accuracy`` of the known clips."""
    gold = answers.get(audio_key)
    if gold is None:
        return ENTAILED if _fraction(audio_key + "coin") < 0.5 else NOT_ENTAILED
    if _fraction(audio_key) < accuracy:
        return gold
    return NOT_ENTAILED if gold == ENTAILED else ENTAILED


def response_text(prompt: Prompt, answer: str, tokens: int) -> str:
    """A ``<think>`` block of about ``tokens`` tokens, then the answer line the reward reads."""
    reasoning = f"The clip is {prompt.audio_seconds:.1f} seconds long; weighing the premises against the conclusion."
    filler = " Checking each premise again." * max(0, (tokens * TEXT_CHARS_PER_TOKEN - len(reasoning)) // 29)
    return f"<think>{reasoning}{filler}</think>\nAnswer: {answer}"


def answer_key(parquet: Path) -> dict[str, str]:
    """audio key -> ground truth for the rows of a prepared parquet, keyed as :func:`read_prompt` keys
    requests: `soundmind eval` sends each row's audio as the same base64 text."""
    from soundmind.eval.requests import read_items

    key = {}
    for item in read_items(parquet):
        audio = [p for m in item.messages if isinstance(m["content"], list) for p in m["content"]]
        data = next((p["input_audio"]["data"] for p in audio if p["type"] == "input_audio"), None)
        if data is not None:
            key[hashlib.sha256(data.encode()).hexdigest()] = item.gold
    return key


class StandIn:
    """The simulated engine behind the HTTP handlers."""

    def __init__(self, behaviour: Behaviour, answers: dict[str, str] | None = None):
        self.behaviour = behaviour
        self.answers = answers or {}
        self.exporter = Exporter(behaviour.served_model_name)
        self.scheduler = Scheduler(behaviour.max_num_seqs, self._scheduler_changed)

    def _scheduler_changed(self, running: int, waiting: int) -> None:
        self.exporter.running.set(running)
        self.exporter.waiting.set(waiting)
        self.exporter.kv_cache_usage.set(running / self.behaviour.max_num_seqs)

    def models(self) -> dict[str, Any]:
        b = self.behaviour
        return {
            "object": "list",
            "data": [
                {
                    "id": b.served_model_name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "vllm",
                    "root": b.model,
                    "parent": None,
                    "max_model_len": b.max_model_len,
                }
            ],
        }

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one chat request, taking as long as the simulated engine would."""
        arrived = time.monotonic()
        b = self.behaviour
        if body.get("model") != b.served_model_name:
            raise RequestError(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("stream"):
            raise RequestError(400, "stream: the stand-in answers whole responses only")
        prompt = read_prompt(body)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or b.max_model_len
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        tokens = min(b.output_tokens, max_tokens, max(b.max_model_len - prompt.tokens, 0))
        if tokens < 1:
            raise RequestError(400, f"the prompt ({prompt.tokens} tokens) fills max_model_len ({b.max_model_len})")
        finish_reason = "length" if tokens < b.output_tokens else "stop"
        text = response_text(prompt, choose_answer(prompt.audio_key, self.answers, b.accuracy), b.output_tokens)
        if finish_reason == "length":
            text = text[: tokens * TEXT_CHARS_PER_TOKEN]

        self.exporter.mm_items.inc(prompt.audio_clips)  # vLLM's processor looks each clip up on arrival
        with self.scheduler.slot():
            time.sleep(prompt.audio_seconds * b.prefill_seconds_per_audio_second)
            self.exporter.time_to_first_token.observe(time.monotonic() - arrived)
            time.sleep(tokens * b.seconds_per_output_token)
        e = self.exporter
        for _ in range(tokens - 1):
            e.inter_token_latency.observe(b.seconds_per_output_token)
        e.e2e_latency.observe(time.monotonic() - arrived)
        e.prompt_tokens.inc(prompt.tokens)
        e.generation_tokens.inc(tokens)
        e.request_success[finish_reason].inc()
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": b.served_model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt.tokens,
                "completion_tokens": tokens,
                "total_tokens": prompt.tokens + tokens,
            },
        }


def make_server(standin: StandIn, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as clients of vLLM expect

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._send(200, b"", "application/json")
            elif self.path == "/metrics":
                self._send(200, standin.exporter.render(), CONTENT_TYPE_LATEST)
            elif self.path == "/v1/models":
                self._json(200, standin.models())
            else:
                self._error(RequestError(404, f"no route {self.path}", "NotFoundError"))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/chat/completions":
                self._error(RequestError(404, f"no route {self.path}", "NotFoundError"))
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise RequestError(400, "the request body must be a JSON object")
                self._json(200, standin.complete(body))
            except json.JSONDecodeError as error:
                self._error(RequestError(400, f"the request body is not JSON: {error}"))
            except RequestError as error:
                self._error(error)

        def _error(self, error: RequestError) -> None:
            self._json(
                error.status,
                {"error": {"message": str(error), "type": error.kind, "param": None, "code": error.status}},
            )

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # one line per request is noise under load
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # many clients connect at once under load; the default backlog is 5

    return Server((host, port), Handler)


# `vllm serve` flags the stand-in acts on; every other one (GPU memory, parallelism, dtype, multimodal
# limits) is vLLM's own business and ignored.
SIMULATED_VLLM_FLAGS = ("--served-model-name", "--max-model-len", "--max-num-seqs", "--host", "--port")


def vllm_serve_arguments(args: list[str]) -> list[str]:
    """The stand-in's arguments for ``vllm serve ARGS``: the model (first, or ``--model``) and the
    flags it simulates, in either of the spellings vLLM accepts (``--max-num-seqs``, ``--max_num_seqs``)."""
    parser = argparse.ArgumentParser(prog="vllm serve", add_help=False)
    for flag in ("--model", *SIMULATED_VLLM_FLAGS):
        dest = flag[2:].replace("-", "_")
        parser.add_argument(*sorted({flag, f"--{dest}"}), dest=dest)
    model, flags = (args[0], args[1:]) if args and not args[0].startswith("-") else (None, args)
    known, _ = parser.parse_known_args(flags)
    model = model or known.model
    if not model:
        parser.error("the model comes first: vllm serve MODEL [FLAGS]")
    argv = ["--model", model]
    for flag in SIMULATED_VLLM_FLAGS:
        value = getattr(known, flag[2:].replace("-", "_"))
        argv += [flag, value] if value is not None else []
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        argv = vllm_serve_arguments(argv[1:])
    defaults = Behaviour()
    parser = argparse.ArgumentParser(prog="python -m soundmind.serve.standin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=PORT, help=f"0 picks a free port (default {PORT})")
    parser.add_argument("--served-model-name", default=defaults.served_model_name)
    parser.add_argument("--model", default=defaults.model)
    parser.add_argument("--max-model-len", type=int, default=defaults.max_model_len)
    parser.add_argument("--max-num-seqs", type=int, default=defaults.max_num_seqs, help="requests run at once")
    parser.add_argument(
        "--prefill-seconds-per-audio-second", type=float, default=defaults.prefill_seconds_per_audio_second
    )
    parser.add_argument("--seconds-per-output-token", type=float, default=defaults.seconds_per_output_token)
    parser.add_argument("--output-tokens", type=int, default=defaults.output_tokens, help="tokens per answer")
    parser.add_argument(
        "--accuracy", type=float, default=defaults.accuracy, help="fraction of known clips answered right"
    )
    parser.add_argument("--answers", type=Path, help="a prepared parquet whose ground truth the answers follow")
    args = parser.parse_args(argv)
    if args.max_num_seqs < 1 or not 0 <= args.accuracy <= 1:
        parser.error("--max-num-seqs must be at least 1 and --accuracy between 0 and 1")
    behaviour = Behaviour(
        served_model_name=args.served_model_name,
        model=args.model,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        prefill_seconds_per_audio_second=args.prefill_seconds_per_audio_second,
        seconds_per_output_token=args.seconds_per_output_token,
        output_tokens=args.output_tokens,
        accuracy=args.accuracy,
    )
    server = make_server(StandIn(behaviour, answer_key(args.answers) if args.answers else None), args.host, args.port)
    # SIGTERM (a pod's stop) ends serve_forever from another thread; shutdown() would deadlock here.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    host, port = server.server_address[:2]
    print(f"{READY_LINE} http://{host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
