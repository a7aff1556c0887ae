"""A raw ALR layout is prepared once, however many processes start on it together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soundmind.train.dataset import COMPLETE_MARKER, ensure_prepared, locate

# Each process runs the real guard with a fake preparation that records that it ran. The racers
# meet at a barrier (a file each, then wait for all) before calling ensure_prepared, and the
# preparation does not finish until every racer has passed the barrier, so the calls overlap by
# construction rather than by a sleep.
RACER = """\
import sys, time
from pathlib import Path
from soundmind.train.dataset import ensure_prepared, locate

raw, runs, barrier, me, racers = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])

def everyone_arrived():
    deadline = time.monotonic() + 30
    while len(list(barrier.iterdir())) < racers:
        assert time.monotonic() < deadline, "racers did not all start"
        time.sleep(0.01)

def prepare(raw_root, out_dir, modality):
    with runs.open("a") as log:
        log.write("prepared\\n")
    everyone_arrived()  # the others are calling ensure_prepared now, while this one holds the lock
    (out_dir / "train.parquet").write_text("rows")
    (out_dir / "dev.parquet").write_text("rows")

(barrier / me).touch()
everyone_arrived()
print(ensure_prepared(locate(raw, "audio"), "audio", prepare=prepare, poll=0.05))
"""


def raw_layout(tmp_path: Path) -> Path:
    raw = tmp_path / "alr"
    raw.mkdir()
    for split in ("train", "dev"):
        (raw / f"{split}.jsonl").write_text("")
    return raw


def test_concurrent_pods_prepare_once(tmp_path):
    raw, runs, barrier = raw_layout(tmp_path), tmp_path / "runs.log", tmp_path / "barrier"
    barrier.mkdir()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(raw), str(runs), str(barrier), str(index), "4"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(4)
    ]
    results = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert [racer.returncode for racer in racers] == [0, 0, 0, 0]
    assert results == ["False", "False", "False", "True"]
    assert runs.read_text() == "prepared\n"
    files = locate(raw, "audio")
    assert files.ready and files.train.read_text() == "rows" and files.directory == raw / "prepared" / "audio"


def test_a_failed_preparation_leaves_no_marker_and_is_retried(tmp_path):
    files = locate(raw_layout(tmp_path), "text")

    def broken(raw_root, out_dir, modality):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ensure_prepared(files, "text", prepare=broken)
    assert not (files.directory / COMPLETE_MARKER).exists()
    assert ensure_prepared(files, "text", prepare=lambda *_: None) is True
    assert ensure_prepared(files, "text", prepare=broken) is False  # done: never runs again
