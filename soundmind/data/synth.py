"""A small ALR data set in the published layout, spoken by espeak-ng.

Text comes from an annotation file (`--from`: question = `user_content`, answer audio = the
reference reasoning in `answer`) or from `soundmind.data.problems`. Each text is one espeak-ng
process (they run in parallel, one per core); its 22.05 kHz output is resampled to 16 kHz mono
16-bit WAV in memory by `soundmind.data.audio`. Every file is written atomically, and the annotation
file last, so an interrupted run never leaves annotations that point at missing or partial audio.
Ids and the split name become directories only after `soundmind.names.safe_name` accepts them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from soundmind import atomic
from soundmind.data import audio, problems
from soundmind.data.layouts import Layout, iter_samples
from soundmind.errors import DataError
from soundmind.names import safe_name

ESPEAK = "espeak-ng"
VOICE = "en-us"
WORDS_PER_MINUTE = 175


@dataclass(frozen=True)
class Annotation:
    id: str
    user_content: str
    answer: str
    label: int


def speak(text: str) -> bytes:
    """`text` spoken by espeak-ng, as a 16 kHz mono 16-bit WAV file in memory."""
    # Text on stdin: no argument-length limit, and text starting with '-' is not taken for an option.
    result = subprocess.run(
        [ESPEAK, "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "--stdout"],
        input=text.encode(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{ESPEAK} failed ({result.returncode}): {result.stderr.decode(errors='replace')[:200]}")
    samples = audio.read_16k(result.stdout)
    if samples.size == 0:
        raise RuntimeError(f"{ESPEAK} produced no audio")
    return audio.wav_bytes(samples)


def generated_annotations(count: int, seed: int = 0) -> list[Annotation]:
    return [
        Annotation(id=f"{index + 1:04d}", user_content=p.question, answer=p.reasoning, label=p.label)
        for index, p in enumerate(problems.generate(count, seed))
    ]


def read_annotations(path: str | Path, split: str, limit: int | None = None) -> list[Annotation]:
    """The first `limit` samples of a published-layout annotation file."""
    path = Path(path)
    annotations = []
    for sample in iter_samples(path.parent, split, Layout.PUBLISHED, annotations=path):
        if limit is not None and len(annotations) >= limit:
            break
        annotations.append(Annotation(sample.id, sample.question, sample.answer, sample.label))
    return annotations


def synthesize(
    out_dir: str | Path, annotations: Iterable[Annotation], split: str = "dev", workers: int | None = None
) -> int:
    """Write `out_dir/<split>.jsonl` and `out_dir/<split>/<id>/{question,answer_<label>}.wav`."""
    if shutil.which(ESPEAK) is None:
        raise DataError(f"{ESPEAK} is not installed (Debian package espeak-ng; `make deps` installs it)")
    out_dir = Path(out_dir)
    annotations = list(annotations)
    if not annotations:
        raise DataError("nothing to speak: no annotations", split=split)
    try:
        safe_name(split, "split name")
        for item in annotations:
            safe_name(item.id, f"id of sample {item.id!r:.40}")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    atomic.ensure_directory(out_dir / split)
    jobs = []
    for item in annotations:
        sample_dir = out_dir / split / item.id
        jobs += [
            (item, sample_dir / "question.wav", item.user_content),
            (item, sample_dir / f"answer_{item.label}.wav", item.answer),
        ]

    def render(job: tuple[Annotation, Path, str]) -> None:
        item, path, text = job
        if not text.strip():
            raise DataError(f"nothing to speak for {path.name}: the text is blank", split=split, sample_id=item.id)
        try:
            spoken = speak(text)
        except (RuntimeError, OSError, ValueError) as exc:  # ValueError: text that is not encodable
            raise DataError(f"speaking {path.name}: {exc}", split=split, sample_id=item.id) from None
        atomic.write_bytes(path, spoken)

    # Threads suffice: each job waits on its espeak-ng process, and soxr/libsndfile release the GIL.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        list(pool.map(render, jobs))

    lines = "".join(json.dumps(item.__dict__, ensure_ascii=False) + "\n" for item in annotations)
    atomic.write_text(out_dir / f"{split}.jsonl", lines)
    return len(annotations)
