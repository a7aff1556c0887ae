"""benchmarks/data_bench.py measures what it says: prepare's rows per second and peak RSS at 1x and
4x, from audio espeak-ng speaks, with a verdict its exit status agrees with; a missing annotation
file is a message, not a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from soundmind.data import synth

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "data_bench.py"


def _bench(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *arguments], capture_output=True, text=True, timeout=300)


def test_it_prepares_both_sizes_and_judges_their_peak_rss(tmp_path: Path, espeak):
    annotations = tmp_path / "dev.jsonl"
    rows = [item.__dict__ for item in synth.generated_annotations(2, seed=3)]
    annotations.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = _bench("--annotations", str(annotations), "--rows", "32", "--spoken", "2", "--repeats", "1")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    measured = {
        int(m["rows"]): (float(m["per_second"]), float(m["rss"]))
        for m in re.finditer(
            r"^\dx\s+(?P<rows>\d+)\s+\S+\s+\S+\s+(?P<per_second>\S+)\s+(?P<rss>\S+)", done.stdout, re.M
        )
    }
    assert set(measured) == {32, 128}, done.stdout
    floor = float(re.search(r"floor: .* peak RSS (\d+) MB", done.stdout)[1])
    assert all(per_second > 0 and rss > floor for per_second, rss in measured.values()), done.stdout
    verdict = "PASS" if done.returncode == 0 else "FAIL"
    growth = measured[128][1] / measured[32][1] - 1
    assert f"\n{verdict}: peak RSS" in done.stdout and (growth <= 0.10) == (verdict == "PASS"), done.stdout


def test_a_missing_file_is_a_message(tmp_path: Path):
    done = _bench("--annotations", str(tmp_path / "absent.jsonl"))
    assert done.returncode == 2 and "pass --annotations PATH" in done.stderr and "Traceback" not in done.stderr
