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
size streams in constant memory; a malformed line or field stops the stream with a `DataError`
naming the split, line and sample id.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from soundmind.data.errors import DataError
from soundmind.prompt import label_to_answer

SPLITS = ("train", "dev", "test")
# Best effort, for the error message only: the id of a line that is not valid JSON.
_ID_IN_BROKEN_LINE = re.compile(r'"id"\s*:\s*"?([^",}\s]+)')


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
    annotation file than the layout's own (audio paths are still resolved under `root`)."""
    root = Path(root)
    path = Path(annotations) if annotations is not None else annotation_file(root, split, layout)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist", split=split)
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, start=1):
            if text.strip():
                yield _parse_line(root, split, layout, number, text)


def _parse_line(root: Path, split: str, layout: Layout, number: int, text: str) -> Sample:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        recovered = _ID_IN_BROKEN_LINE.search(text)
        raise DataError(
            f"malformed JSON ({exc.msg} at column {exc.colno})",
            split=split,
            line=number,
            sample_id=recovered.group(1) if recovered else None,
        ) from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", split=split, line=number)

    sample_id = record.get("id")
    if not isinstance(sample_id, str | int) or isinstance(sample_id, bool) or str(sample_id) == "":
        raise DataError(f"'id' must be a non-empty string or integer, got {sample_id!r}", split=split, line=number)
    sample_id = str(sample_id)

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
    if layout is Layout.PUBLISHED:
        audio_dir = root / split / sample_id
        question_audio, answer_audio = audio_dir / "question.wav", audio_dir / f"answer_{label}.wav"
    else:
        question_audio = root / split / field("question_file_name")
        answer_audio = root / split / field("answer_file_name")
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
