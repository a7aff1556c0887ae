"""Data preparation: rows per second of `soundmind data prepare` with audio, and its peak RSS at 1x and
4x the data size (issue 15).

Input: the first `--spoken` rows of the ALR dev annotations (../shared/data/alr/dev.jsonl, the file
the tests read) spoken once by espeak-ng (`soundmind data synth --from`: about a minute of question and
four of reasoning per row). Two published-layout data sets are made from those recordings in
turn under distinct ids: `--rows` rows (1x) and four times as many (4x). Each row has its own
question recording, a spoken one rotated by a per-row number of samples (real speech of the same
length, but no two rows alike: parquet stores identical values once, and copies would shrink the
output), and a link to the spoken reasoning recording (prepare reads only its header). The 4x set
is four times the audio to read, check, embed and write, without four times the espeak-ng time.

Each size is `soundmind data prepare --modality audio-text` (embedded 16 kHz WAV, the default) run
as a child process, the command users run, `--repeats` times; per run its wall time and its own
peak RSS (its ru_maxrss, taken by a bare launcher process: see LAUNCHER). In the same run, a
floor: the peak RSS of a child that only imports what prepare imports (interpreter, pyarrow,
numpy, soundfile, soxr), so any growth is seen against the part that can grow.

    $(hack/venv.sh)/bin/python benchmarks/data_bench.py [--rows 64] [--spoken 8] [--repeats 2]

Target (issue 15): peak RSS at 4x within 10% of 1x (memory does not grow with the data set).
Prints PASS or FAIL; exits 1 on FAIL, 2 when the annotations or espeak-ng are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from soundmind.data import audio, synth  # noqa: E402
from soundmind.data.prepare import DEFAULT_ROW_GROUP_ROWS  # noqa: E402

DEFAULT_ANNOTATIONS = ROOT.parent / "shared" / "data" / "alr" / "dev.jsonl"
SPLIT = "dev"
SCALE = 4
ROTATION = 7919  # samples each row's question is rotated by, times its index (a prime: no repeats)
RSS_TOLERANCE = 0.10


def speak(annotations: Path, count: int, out: Path) -> list[dict]:
    """The first `count` annotation rows spoken into `out` (published layout); their records."""
    synth.synthesize(out, synth.read_annotations(annotations, SPLIT, count), split=SPLIT)
    return [json.loads(line) for line in (out / f"{SPLIT}.jsonl").read_text(encoding="utf-8").splitlines()]


def data_set(spoken: Path, records: list[dict], rows: int, out: Path) -> Path:
    """A published-layout data set of `rows` samples, the spoken ones in turn under new ids, each
    with a question recording of its own."""
    questions = [soundfile.read(spoken / SPLIT / r["id"] / "question.wav", dtype="int16")[0] for r in records]
    lines = []
    for index in range(rows):
        record = records[index % len(records)]
        sample_id = f"{index:06d}"
        sample_dir = out / SPLIT / sample_id
        sample_dir.mkdir(parents=True)
        question = np.roll(questions[index % len(records)], index * ROTATION)
        soundfile.write(sample_dir / "question.wav", question, audio.SAMPLE_RATE, subtype="PCM_16")
        answer = f"answer_{record['label']}.wav"
        (sample_dir / answer).symlink_to(spoken / SPLIT / record["id"] / answer)
        lines.append(json.dumps({**record, "id": sample_id}, ensure_ascii=False))
    (out / f"{SPLIT}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


# Linux carries a process's RSS high-water mark across exec, and a child starts as a copy (or a
# vfork) of its parent: a command started from this process (pyarrow, numpy and the recordings
# loaded) reports at least this process's peak as its own. So each measured command is started by a
# bare interpreter (about 10 MB), which writes the command's peak RSS (KiB) to the file argv[1].
LAUNCHER = """
import os, resource, sys
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
status = os.waitpid(pid, 0)[1]
with open(sys.argv[1], "w") as out:
    out.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child(command: list[str], work: Path) -> tuple[float, float, str]:
    """Run `command`; its wall seconds, its own peak RSS in MB, and its output. Exits on failure."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    peak = work / "peak-rss-kib"
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, str(peak), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wall = time.monotonic() - began
    if result.returncode != 0:
        sys.exit(f"data_bench: {' '.join(command)} exited {result.returncode}:\n{result.stdout}")
    return wall, int(peak.read_text()) / 1024, result.stdout


def prepare(data_dir: Path, out: Path, rows: int) -> tuple[float, float, float]:
    """`soundmind data prepare` of `data_dir`: wall seconds, peak RSS MB, output MB (checked)."""
    wall, rss, _ = child(
        [sys.executable, "-m", "soundmind", "data", "prepare", "--data-dir", str(data_dir), "--out", str(out),
         "--modality", "audio-text"],
        out.parent,
    )  # fmt: skip
    written = pq.ParquetFile(out / f"{SPLIT}.parquet")
    groups = -(-rows // DEFAULT_ROW_GROUP_ROWS)
    if (written.metadata.num_rows, written.metadata.num_row_groups) != (rows, groups):
        sys.exit(
            f"data_bench: {out} holds {written.metadata.num_rows} rows in {written.metadata.num_row_groups} row "
            f"groups; expected {rows} in {groups}"
        )
    size = (out / f"{SPLIT}.parquet").stat().st_size / 1e6
    shutil.rmtree(out)
    return wall, rss, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--annotations", type=Path, default=DEFAULT_ANNOTATIONS, help="ALR annotations (default: %(default)s)"
    )
    parser.add_argument("--rows", type=int, default=64, help=f"rows at 1x ({SCALE}x: {SCALE} times as many)")
    parser.add_argument("--spoken", type=int, default=8, help="annotation rows espeak-ng speaks (the audio reused)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size: median time, largest peak RSS")
    args = parser.parse_args(argv)
    if not args.annotations.is_file():
        print(
            f"data_bench: ALR annotations not found at {args.annotations}; pass --annotations PATH "
            "(any ALR annotation file: id, user_content, answer, label per JSON line)",
            file=sys.stderr,
        )
        return 2
    if shutil.which(synth.ESPEAK) is None:
        print(f"data_bench: {synth.ESPEAK} is not installed (make deps)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="data-bench-"))
    try:
        began = time.monotonic()
        records = speak(args.annotations, args.spoken, work / "spoken")
        print(f"{len(records)} dev rows spoken by {synth.ESPEAK} in {time.monotonic() - began:.1f}s ({work})")
        _, floor_rss, _ = child([sys.executable, "-c", "import soundmind.cli, soundmind.data.prepare"], work)
        print(f"floor: a child importing what prepare imports, peak RSS {floor_rss:.0f} MB")
        print(f"prepare --modality audio-text, {DEFAULT_ROW_GROUP_ROWS} rows per row group, {args.repeats} runs each")
        print(
            f"{'size':<6}{'rows':>7}{'parquet MB':>12}{'wall s':>9}{'rows/s':>9}{'peak RSS MB':>13}{'above floor':>13}"
        )
        results = {}
        for scale in (1, SCALE):
            rows = args.rows * scale
            data_dir = data_set(work / "spoken", records, rows, work / f"{scale}x")
            runs = [prepare(data_dir, work / f"{scale}x-prepared", rows) for _ in range(args.repeats)]
            wall = statistics.median(run[0] for run in runs)
            rss = max(run[1] for run in runs)
            results[scale] = (rows, wall, rss)
            print(
                f"{scale}x{'':<4}{rows:>7}{runs[0][2]:>12.0f}{wall:>9.1f}{rows / wall:>9.1f}{rss:>13.0f}"
                f"{rss - floor_rss:>13.0f}"
            )
        (rows_1, wall_1, rss_1), (rows_n, wall_n, rss_n) = results[1], results[SCALE]
        # Start-up (interpreter, imports) is paid once per run; the difference between sizes is the work.
        print(f"rows/s without start-up ({SCALE}x - 1x): {(rows_n - rows_1) / max(wall_n - wall_1, 1e-9):.1f}")
        growth = rss_n / rss_1 - 1
        verdict = "PASS" if growth <= RSS_TOLERANCE else "FAIL"
        print(
            f"{verdict}: peak RSS {rss_1:.0f} MB at 1x, {rss_n:.0f} MB at {SCALE}x ({growth:+.1%}; "
            f"target: within {RSS_TOLERANCE:.0%})"
        )
        return 0 if verdict == "PASS" else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
