"""The two ways an ALR data set is laid out on disk, read as one stream of `Sample`s.

1. Published annotation files (also what `soundmind data synth` writes)::

       <root>/{train,dev,test}.jsonl          id, user_content, answer, label
       <root>/<split>/<id>/question.wav
       <root>/<split>/<id>/answer_<label>.wav

2. Hugging Face layout::

       <root>/<split>/metadata.jsonl          id, question_file_name, answer_file_name,
                                              annotation_question, annotation_answer, label
       (file names relative to <root>/<split>/)

Label 0 is not-entailed, 1 is entailed. Annotation files are read line by line, so a split of any
size streams with only its ids kept (to refuse a duplicate); a malformed line or field, or an id
seen twice, stops the stream with a `DataError` naming the split, line and sample id.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from soundmind.annotations import read_records, record_id
from soundmind.errors import DataError
from soundmind.names import inside, safe_name
from soundmind.prompt import label_to_answer

SPLITS = ("train", "dev", "test")


class Layout(enum.Enum):
    PUBLISHED = "published"
    HUGGING_FACE = "huggingface"


@dataclass(frozen=True)
class Sample:
    split: str
    line: int  # 1-based line of the annotation file
    id: str
    question: str  # the question text (user_content / annotation_question)
    answer: str  # the reference reasoning (answer / annotation_answer)
    label: int  # 0 = not-entailed, 1 = entailed
    question_audio: Path
    answer_audio: Path


# Per layout: the sample's JSON field names for (question, answer) text.
_TEXT_FIELDS = {
    Layout.PUBLISHED: ("user_content", "answer"),
    Layout.HUGGING_FACE: ("annotation_question", "annotation_answer"),
}


def annotation_file(root: Path, split: str, layout: Layout) -> Path:
    if layout is Layout.PUBLISHED:
        return root / f"{split}.jsonl"
    return root / split / "metadata.jsonl"


def detect_layout(root: str | Path) -> Layout:
    """Which layout `root` has; a DataError when it has neither, or both."""
    root = Path(root)
    found = [layout for layout in Layout if any(annotation_file(root, split, layout).is_file() for split in SPLITS)]
    if len(found) == 1:
        return found[0]
    expected = f"{root}/<split>.jsonl (published) or {root}/<split>/metadata.jsonl (Hugging Face), <split> in {SPLITS}"
    if not found:
        raise DataError(f"no ALR annotation file found; expected {expected}")
    raise DataError(f"both layouts found under {root}; keep one of {expected}")


def present_splits(root: str | Path, layout: Layout) -> list[str]:
    return [split for split in SPLITS if annotation_file(Path(root), split, layout).is_file()]


def iter_samples(
    root: str | Path, split: str, layout: Layout, annotations: str | Path | None = None
) -> Iterator[Sample]:
    """The samples of one split in file order (blank lines skipped). `annotations` reads another
    annotation file than the layout's own (audio paths are still resolved under `root`). A split
    without a single sample is a DataError: it would make an empty data set that looks fine. So is
    an id seen twice in the split, naming both lines: the sample would train twice, and the
    published layout would read both rows' audio from the same directory."""
    root = Path(root)
    try:
        safe_name(split, "split name")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    path = Path(annotations) if annotations is not None else annotation_file(root, split, layout)
    first_line: dict[str, int] = {}  # id -> the line it first appeared on: one entry per sample, not per row's data
    for number, record in read_records(path, split):
        sample = _parse_record(root, split, layout, number, record)
        seen = first_line.setdefault(sample.id, number)
        if seen != number:
            raise DataError(
                f"{path} has this id on line {seen} too; each sample needs its own id",
                split=split,
                line=number,
                sample_id=sample.id,
            )
        yield sample


def _parse_record(root: Path, split: str, layout: Layout, number: int, record: dict) -> Sample:
    sample_id = record_id(record, split, number)

    def field(name: str) -> str:
        value = record.get(name)
        if not isinstance(value, str):
            raise DataError(
                f"field {name!r} must be a string, got {value!r:.60}", split=split, line=number, sample_id=sample_id
            )
        return value

    label = record.get("label")
    try:
        label_to_answer(label)
    except ValueError as exc:
        raise DataError(str(exc), split=split, line=number, sample_id=sample_id) from None

    question_field, answer_field = _TEXT_FIELDS[layout]
    try:
        if layout is Layout.PUBLISHED:
            audio_dir = root / split / safe_name(sample_id, "id")
            question_audio, answer_audio = audio_dir / "question.wav", audio_dir / f"answer_{label}.wav"
        else:
            question_audio = inside(root / split, field("question_file_name"), "question_file_name")
            answer_audio = inside(root / split, field("answer_file_name"), "answer_file_name")
    except ValueError as exc:
        raise DataError(str(exc), split=split, line=number, sample_id=sample_id) from None
    return Sample(
        split=split,
        line=number,
        id=sample_id,
        question=field(question_field),
        answer=field(answer_field),
        label=label,
        question_audio=question_audio,
        answer_audio=answer_audio,
    )
