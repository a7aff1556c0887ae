"""A raw ALR layout is prepared once, however many processes start on it together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from soundmind.train.dataset import COMPLETE_MARKER, ensure_prepared, locate

# Each process runs the real guard with a fake preparation that records that it ran. The first
# preparation does not finish until every other racer is provably inside the guard too: either
# refused by the lock (flock raised BlockingIOError, recorded by wrapping fcntl.flock) or inside a
# preparation of its own. With the lock, the others are all refused while the first one prepares,
# and find the finished copy once they hold it; without the lock, nothing is refused, so the first
# preparation waits until all the others have started theirs and the log shows every racer's run.
# The overlap is certain by construction, not by timing.
RACER = """\
import fcntl, sys, time
from pathlib import Path
from soundmind.train.dataset import ensure_prepared, locate

raw, runs, seen, me, racers = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
flock = fcntl.flock

def recording_flock(fd, operation):
    try:
        return flock(fd, operation)
    except BlockingIOError:
        (seen / f"refused-{me}").touch()  # inside ensure_prepared, kept out by the lock
        raise

fcntl.flock = recording_flock

def everyone_inside():
    deadline = time.monotonic() + 30
    while len({path.name.split("-")[1] for path in seen.iterdir()}) < racers:
        assert time.monotonic() < deadline, f"only {sorted(p.name for p in seen.iterdir())} of {racers} racers inside"
        time.sleep(0.01)

def prepare(raw_root, out_dir, modality):
    with runs.open("a") as log:
        log.write(f"prepared by {me}\\n")
    (seen / f"preparing-{me}").touch()
    everyone_inside()
    (out_dir / "train.parquet").write_text("rows")
    (out_dir / "dev.parquet").write_text("rows")

print(ensure_prepared(locate(raw, "audio"), "audio", prepare=prepare, poll=0.05))
"""
RACERS = 4


def raw_layout(tmp_path: Path) -> Path:
    raw = tmp_path / "alr"
    raw.mkdir()
    for split in ("train", "dev"):
        (raw / f"{split}.jsonl").write_text("")
    return raw


def test_concurrent_pods_prepare_once(tmp_path):
    raw, runs, seen = raw_layout(tmp_path), tmp_path / "runs.log", tmp_path / "seen"
    seen.mkdir()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(raw), str(runs), str(seen), str(index), str(RACERS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(RACERS)
    ]
    outputs = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0] * RACERS, [stderr for _, stderr in outputs]
    assert len(runs.read_text().splitlines()) == 1, runs.read_text()  # one preparation, however many racers
    assert sorted(stdout.strip() for stdout, _ in outputs) == ["False"] * (RACERS - 1) + ["True"]
    # Every other racer was refused by the lock while the preparation ran: the calls overlapped.
    (preparer,) = [path.name.split("-")[1] for path in seen.glob("preparing-*")]
    refused = {path.name.split("-")[1] for path in seen.glob("refused-*")}
    assert refused == {str(index) for index in range(RACERS)} - {preparer}
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
