"""benchmarks/reward_bench.py runs anywhere: on any annotation file given by path, and with a
message (not a traceback) when the default one is absent; it measures every response shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "reward_bench.py"


def _bench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *arguments], capture_output=True, text=True, timeout=120)


def test_it_takes_a_path_and_measures_every_shape(tmp_path):
    rows = [{"id": f"b{i}", "answer": f"step one\nstep two {i}\nAnswer: entailed", "label": 1} for i in range(3)]
    annotations = tmp_path / "few.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = _bench("--annotations", str(annotations), "--passes", "1")
    # Its verdict, not this machine's speed, decides the exit status (a loaded CI machine may miss).
    assert done.returncode == (1 if "MISSES the target" in done.stdout else 0), done.stderr
    for shape in ("reference", "one-line", "cut-off", "max-length", "100 kB"):
        assert f"\n{shape} " in done.stdout
    assert "median of 1 passes" in done.stdout


def test_a_missing_file_is_a_message(tmp_path):
    done = _bench("--annotations", str(tmp_path / "absent.jsonl"))
    assert done.returncode == 2 and "pass --annotations PATH" in done.stderr and "Traceback" not in done.stderr
