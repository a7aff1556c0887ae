"""The head's progress reporter: tails verl's file-logger JSONL and publishes what it says.

verl 0.9.1's `file` logger (verl/utils/tracking.py, FileLogger) writes one JSON object per line,
`{"step": N, "data": {metric: value, ...}}`: once before training with the validation metrics, then
once per step. The reporter reads new complete lines, keeps the latest values, and

- sets the Prometheus gauges (soundmind.train.metrics) at once, and
- merge-patches `status.progress`, `status.checkpoint` and, once the head has exported the trained
  model, `status.model` of its SoundMindTraining through the status subresource, at most once per
  `interval` and only when something changed. A failed patch is retried with exponential backoff;
  nothing here ever raises into the training.

The checkpoint comes from verl's `latest_checkpointed_iteration.txt`, which verl writes only after
`global_step_N/` is complete. Lines that are not such JSON objects are counted and skipped.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING, CheckpointStatus, ModelStatus, TrainingProgress
from soundmind.train import contract
from soundmind.train.metrics import TrainMetrics

# verl 0.9.1 metric names (verl/trainer/ppo/metric_utils.py, verl/trainer/ppo/v1/trainer_base.py).
REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")  # the reward function's score; after KL-in-reward
RESPONSE_LENGTH_KEY = "response_length/mean"
THROUGHPUT_KEY = "perf/throughput"
EPOCH_KEY = "training/epoch"  # 0-based in verl
# Validation: "val-core/<data_source>/acc/mean@<n>"; `acc` is a key of soundmind.reward's result.
VAL_ACCURACY_KEY = re.compile(r"^val-core/.+/acc/mean@\d+$")
LATEST_CHECKPOINT_FILE = "latest_checkpointed_iteration.txt"

StatusPatch = Callable[[dict], None]


class LogTail:
    """New complete lines of a file that may not exist yet and may be restarted (truncated)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def lines(self) -> Iterator[bytes]:
        try:
            with self.path.open("rb") as file:
                if file.seek(0, 2) < self.offset:  # rewritten from the start
                    self.offset, self.partial = 0, b""
                file.seek(self.offset)
                chunk = file.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).split(b"\n")
        yield from (line for line in complete if line.strip())


@dataclass
class Snapshot:
    step: int | None = None
    epoch: int | None = None
    reward_mean: float | None = None
    val_accuracy: float | None = None
    response_length: float | None = None
    throughput: float | None = None
    checkpoint_step: int | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def parse_record(line: bytes) -> tuple[int, dict] | None:
    """(step, metrics) of one verl log line; None when it is not such a line."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        return None
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None
    return step, record["data"]


def apply_record(snapshot: Snapshot, step: int, data: dict) -> None:
    snapshot.step = max(step, snapshot.step or 0)
    epoch = _number(data.get(EPOCH_KEY))
    if epoch is not None:
        snapshot.epoch = int(epoch) + 1
    for key in REWARD_KEYS:
        if (value := _number(data.get(key))) is not None:
            snapshot.reward_mean = value
            break
    accuracies = [_number(value) for key, value in data.items() if VAL_ACCURACY_KEY.match(key)]
    accuracies = [value for value in accuracies if value is not None]
    if accuracies:
        snapshot.val_accuracy = sum(accuracies) / len(accuracies)
    if (value := _number(data.get(RESPONSE_LENGTH_KEY))) is not None:
        snapshot.response_length = value
    if (value := _number(data.get(THROUGHPUT_KEY))) is not None:
        snapshot.throughput = value


def read_checkpoint_step(checkpoint_dir: str | Path) -> int | None:
    try:
        return int((Path(checkpoint_dir) / LATEST_CHECKPOINT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReporter:
    def __init__(
        self,
        log_path: str | Path,
        checkpoint_dir: str | Path,
        metrics: TrainMetrics,
        patch_status: StatusPatch | None,
        total_steps: int | None = None,
        interval: float = contract.PROGRESS_INTERVAL_SECONDS,
        max_backoff: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], str] = _utc_now,
        log: Callable[[str], None] = lambda message: print(f"soundmind: {message}", file=sys.stderr, flush=True),
    ):
        self.tail = LogTail(log_path)
        self.checkpoint_dir = str(checkpoint_dir)
        self.metrics = metrics
        self.patch_status = patch_status
        self.total_steps = total_steps
        self.interval = interval
        self.max_backoff = max_backoff
        self.clock = clock
        self.now = now
        self.log = log
        self.snapshot = Snapshot()
        self.model: ModelStatus | None = None  # set by the head after a successful export
        self.published: dict | None = None  # the last status body the API server accepted
        self.next_patch_at = clock()
        self.failures = 0
        if total_steps is not None:
            metrics.total_steps.set(total_steps)

    def poll(self, force: bool = False) -> None:
        """Read what verl wrote since the last call, update the gauges, and patch the status when due
        (`force`: now, whatever the interval; for the final report)."""
        for line in self.tail.lines():
            record = parse_record(line)
            if record is None:
                self.metrics.malformed_log_lines.inc()
                continue
            apply_record(self.snapshot, *record)
        checkpoint_step = read_checkpoint_step(self.checkpoint_dir)
        if checkpoint_step is not None:
            self.snapshot.checkpoint_step = checkpoint_step
        self._set_gauges()
        if self.patch_status is not None and (force or self.clock() >= self.next_patch_at):
            self._patch()

    def _set_gauges(self) -> None:
        snapshot, metrics = self.snapshot, self.metrics
        for gauge, value in (
            (metrics.step, snapshot.step),
            (metrics.epoch, snapshot.epoch),
            (metrics.reward_mean, snapshot.reward_mean),
            (metrics.val_accuracy, snapshot.val_accuracy),
            (metrics.response_length, snapshot.response_length),
            (metrics.throughput, snapshot.throughput),
            (metrics.last_checkpoint_step, snapshot.checkpoint_step),
        ):
            if value is not None:
                gauge.set(value)

    def status_body(self) -> dict:
        """The status fields this reporter owns, as a merge patch (unknown values left out)."""
        snapshot = self.snapshot
        status: dict = {}
        if snapshot.step is not None:
            status["progress"] = TrainingProgress(
                step=snapshot.step,
                total_steps=self.total_steps,
                epoch=snapshot.epoch,
                reward_mean=snapshot.reward_mean,
                val_accuracy=snapshot.val_accuracy,
            ).to_api()
        if snapshot.checkpoint_step is not None:
            status["checkpoint"] = CheckpointStatus(
                step=snapshot.checkpoint_step, path=f"{self.checkpoint_dir}/global_step_{snapshot.checkpoint_step}"
            ).to_api()
        if self.model is not None:
            status["model"] = self.model.to_api()
        return {"status": status}

    def _patch(self) -> None:
        body = self.status_body()
        if not body["status"] or body == self.published:
            return
        stamped = json.loads(json.dumps(body))
        if "progress" in stamped["status"]:
            stamped["status"]["progress"]["updatedAt"] = self.now()
        try:
            self.patch_status(stamped)
        except Exception as exc:  # noqa: BLE001 - whatever the API does, training goes on
            self.failures += 1
            self.metrics.status_patch_failures.inc()
            delay = min(self.interval * 2 ** (self.failures - 1), self.max_backoff)
            self.next_patch_at = self.clock() + delay
            self.log(f"status patch failed ({_describe(exc)}); retrying in {delay:g}s")
            return
        self.failures = 0
        self.published = body
        self.next_patch_at = self.clock() + self.interval

    def run(self, stop: threading.Event, poll_every: float = 1.0) -> None:
        """Poll until `stop` is set, then report once more (the driver's last lines and checkpoint)."""
        while not stop.wait(poll_every):
            self.poll()
        self.poll(force=True)


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason}" if status else f"{type(exc).__name__}: {exc}"


def status_patcher(api_client, namespace: str, name: str, timeout: float = 10.0) -> StatusPatch:
    """Merge-patches the status subresource of SoundMindTraining `namespace/name`."""
    from kubernetes import client

    custom_objects = client.CustomObjectsApi(api_client)

    def patch(body: dict) -> None:
        custom_objects.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            TRAINING.plural,
            name,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=timeout,
        )

    return patch


def api_client_from_environment():
    """The pod's ServiceAccount in a cluster; KUBECONFIG (or ~/.kube/config) elsewhere."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()
