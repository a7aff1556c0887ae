"""The progress reporter against a fake clock and a recording status sink (no cluster)."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from soundmind.train import metrics as names
from soundmind.train.metrics import TrainMetrics
from soundmind.train.progress import ProgressReporter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def line(step: int, **data) -> str:
    return json.dumps({"step": step, "data": data}) + "\n"


def make(tmp_path, patch, interval=10.0):
    clock = Clock()
    metrics = TrainMetrics()
    reporter = ProgressReporter(
        tmp_path / "logs" / "attempt-1.jsonl",
        tmp_path,
        metrics,
        patch,
        total_steps=40,
        interval=interval,
        clock=clock,
        now=lambda: "2026-01-01T00:00:00Z",
        log=lambda message: None,
    )
    (tmp_path / "logs").mkdir()
    return reporter, clock, metrics


def value(metrics: TrainMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_reports_verl_metrics_and_checkpoint(tmp_path):
    patches = []
    reporter, clock, metrics = make(tmp_path, patches.append)
    reporter.poll()  # no log yet: nothing to say
    assert patches == []
    with open(reporter.tail.path, "a", buffering=1) as log:
        log.write(line(0, **{"val-core/soundmind/alr/acc/mean@1": 0.5}))
        log.write(
            line(
                1,
                **{
                    "critic/score/mean": 1.25,
                    "critic/rewards/mean": 1.0,
                    "response_length/mean": 812.5,
                    "perf/throughput": 950.0,
                    "training/epoch": 0,
                    "training/global_step": 1,
                },
            )
        )
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("1")
    reporter.poll()
    assert patches == [
        {
            "status": {
                "progress": {
                    "step": 1,
                    "totalSteps": 40,
                    "epoch": 1,
                    "rewardMean": 1.25,
                    "valAccuracy": 0.5,
                    "updatedAt": "2026-01-01T00:00:00Z",
                },
                "checkpoint": {"step": 1, "path": f"{tmp_path}/global_step_1"},
            }
        }
    ]
    assert value(metrics, names.STEP) == 1 and value(metrics, names.TOTAL_STEPS) == 40
    assert value(metrics, names.REWARD_MEAN) == 1.25 and value(metrics, names.VAL_ACCURACY) == 0.5
    assert value(metrics, names.RESPONSE_LENGTH) == 812.5 and value(metrics, names.THROUGHPUT) == 950.0
    assert value(metrics, names.LAST_CHECKPOINT_STEP) == 1
    exposed = generate_latest(metrics.registry).decode()
    assert all(name in exposed for name in names.ALL)


def test_patches_at_most_once_per_interval_and_only_on_change(tmp_path):
    patches = []
    reporter, clock, metrics = make(tmp_path, patches.append)
    with open(reporter.tail.path, "a", buffering=1) as log:
        log.write(line(1, **{"critic/score/mean": 1.0}))
        reporter.poll()
        log.write(line(2, **{"critic/score/mean": 2.0}))
        clock.now = 9.9
        reporter.poll()
        assert len(patches) == 1 and value(metrics, names.STEP) == 2  # gauges follow at once
        clock.now = 10.0
        reporter.poll()
        assert [patch["status"]["progress"]["step"] for patch in patches] == [1, 2]
        clock.now = 30.0
        reporter.poll()  # nothing new
        assert len(patches) == 2
        log.write(line(3))
        reporter.poll(force=True)  # the final report ignores the interval
        assert len(patches) == 3


def test_malformed_lines_are_counted_and_skipped(tmp_path):
    patches = []
    reporter, clock, metrics = make(tmp_path, patches.append)
    with open(reporter.tail.path, "ab", buffering=0) as log:
        log.write(b'not json\n{"step": "one", "data": {}}\n[1, 2]\n\xff\xfe\n{"step": 1, "data": {}}\n')
        log.write(b'{"step": 2, "data": {"critic/score/mean": NaN')  # half-written: waits for the rest
        reporter.poll()
        assert value(metrics, names.MALFORMED_LOG_LINES) == 4
        assert value(metrics, names.STEP) == 1
        log.write(b"}}\n")
        reporter.poll()
    assert value(metrics, names.STEP) == 2 and value(metrics, names.MALFORMED_LOG_LINES) == 4
    assert reporter.snapshot.reward_mean is None  # NaN is not a reward


def test_api_errors_back_off_and_never_raise(tmp_path):
    calls = []

    def failing(body):
        calls.append(body)
        if len(calls) <= 3:
            raise ConnectionError("apiserver down")

    reporter, clock, metrics = make(tmp_path, failing, interval=10.0)
    reporter.tail.path.write_text(line(1))
    attempts_at = []
    for second in range(0, 200):
        clock.now = float(second)
        before = len(calls)
        reporter.poll()
        if len(calls) > before:
            attempts_at.append(second)
    assert attempts_at == [0, 10, 30, 70]  # backoff 10, 20, 40, then success
    assert value(metrics, names.STATUS_PATCH_FAILURES) == 3
    assert reporter.published is not None


def test_a_restarted_log_is_read_from_the_start(tmp_path):
    reporter, clock, metrics = make(tmp_path, None)
    reporter.tail.path.write_text(line(5) + line(6))
    reporter.poll()
    reporter.tail.path.write_text(line(7))  # verl truncates its log when it starts again
    reporter.poll()
    assert value(metrics, names.STEP) == 7
