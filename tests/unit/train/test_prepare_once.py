"""A raw ALR layout is prepared once, however many processes start on it together."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from soundmind.train.dataset import COMPLETE_MARKER, ensure_prepared, locate

# Each process runs the real guard with a slow fake preparation that records that it ran.
RACER = """\
import sys, time
from pathlib import Path
from soundmind.train.dataset import ensure_prepared, locate

raw, runs = Path(sys.argv[1]), Path(sys.argv[2])

def prepare(raw_root, out_dir, modality):
    with runs.open("a") as log:
        log.write("prepared\\n")
    time.sleep(1.0)
    (out_dir / "train.parquet").write_text("rows")
    (out_dir / "dev.parquet").write_text("rows")

print(ensure_prepared(locate(raw, "audio"), "audio", prepare=prepare, poll=0.05))
"""


def raw_layout(tmp_path: Path) -> Path:
    raw = tmp_path / "alr"
    raw.mkdir()
    (raw / "train.jsonl").write_text("")
    return raw


def test_concurrent_pods_prepare_once(tmp_path):
    raw, runs = raw_layout(tmp_path), tmp_path / "runs.log"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(RACER), str(raw), str(runs)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
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

    try:
        ensure_prepared(files, "text", prepare=broken)
    except OSError:
        pass
    assert not (files.directory / COMPLETE_MARKER).exists()
    assert ensure_prepared(files, "text", prepare=lambda *_: None) is True
    assert ensure_prepared(files, "text", prepare=broken) is False  # done: never runs again
