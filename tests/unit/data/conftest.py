"""Fixtures for the data tests: small ALR data sets in both layouts, written by the tests themselves
(generated problems spoken by espeak-ng, or a few hand-written rows), and the shared dev annotations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from soundmind.data import synth
from tests.support.alr import DEV_JSONL, dev_rows
from tests.support.prerequisite import missing

SYNTH_ROWS = 6


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "verl: runs verl 0.9.1's own dataset code (imports torch; a few seconds)")


def _require_espeak() -> None:
    if shutil.which(synth.ESPEAK) is None:
        missing("espeak-ng is not installed (make deps)")


@pytest.fixture(scope="session")
def espeak() -> None:
    """espeak-ng is installed (a missing one fails in CI, skips elsewhere)."""
    _require_espeak()


@pytest.fixture(scope="session")
def alr_dev_dir() -> Path:
    """The directory holding the shared `dev.jsonl` (published layout, text only)."""
    dev_rows()  # fails in CI, skips elsewhere, when the file is missing
    return DEV_JSONL.parent


@pytest.fixture(scope="session")
def spoken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published-layout data set of SYNTH_ROWS generated problems (split dev) spoken by espeak-ng.
    Session-scoped and read-only: tests that damage a data set copy it first (`copy_of`)."""
    _require_espeak()
    root = tmp_path_factory.mktemp("spoken")
    synth.synthesize(root, synth.generated_annotations(SYNTH_ROWS, seed=7), split="dev")
    return root


@pytest.fixture
def copy_of(tmp_path: Path):
    def copy(source: Path) -> Path:
        target = tmp_path / f"copy-{source.name}"
        shutil.copytree(source, target)
        return target

    return copy


def _write_jsonl(path: Path, records: list) -> Path:
    """Records (dicts, or raw strings written as they are) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _to_hugging_face_layout(published: Path, target: Path, split: str = "dev") -> Path:
    """The same samples in the Hugging Face layout (metadata.jsonl, flat audio files)."""
    split_dir = target / split
    split_dir.mkdir(parents=True)
    records = []
    for line in (published / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        sample_dir = published / split / row["id"]
        question, answer = f"audio/{row['id']}_q.wav", f"audio/{row['id']}_a.wav"
        (split_dir / "audio").mkdir(exist_ok=True)
        shutil.copy(sample_dir / "question.wav", split_dir / question)
        shutil.copy(sample_dir / f"answer_{row['label']}.wav", split_dir / answer)
        records.append(
            {
                "id": row["id"],
                "question_file_name": question,
                "answer_file_name": answer,
                "annotation_question": row["user_content"],
                "annotation_answer": row["answer"],
                "label": row["label"],
            }
        )
    _write_jsonl(split_dir / "metadata.jsonl", records)
    return target


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def to_hugging_face_layout():
    return _to_hugging_face_layout
