"""How the published reference reasoning agrees with the labels.

Some ALR reference chains end with an answer that contradicts their own label (33 of the 606 dev
rows). The label is the ground truth; this makes the disagreement visible instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from soundmind.annotations import read_records, record_id
from soundmind.errors import DataError
from soundmind.prompt import label_to_answer
from soundmind.reward.answer import parse_answer

# The reference reasoning's field: published layout (`<split>.jsonl`), Hugging Face (`metadata.jsonl`).
ANSWER_FIELDS = ("answer", "annotation_answer")


@dataclass
class ReferenceCheck:
    total: int = 0
    contradicting: list[str] = field(default_factory=list)  # ids whose last line names the other label
    unparseable: list[str] = field(default_factory=list)  # ids whose last line names no single label


def check_references(annotations: Path) -> ReferenceCheck:
    """Reads ALR annotations (`id`, `answer` or `annotation_answer`, `label` per JSON line, either
    layout) and compares the answer each reference chain ends with against the row's label. A row
    that is not an annotation is a DataError naming its line and id."""
    check = ReferenceCheck()
    for number, row in read_records(Path(annotations)):
        row_id = record_id(row, None, number)
        answer = next((row[name] for name in ANSWER_FIELDS if name in row), None)
        if not isinstance(answer, str):
            raise DataError(
                f"{annotations}: the reference reasoning ({' or '.join(map(repr, ANSWER_FIELDS))}) must be a "
                f"string, got {answer!r:.60}",
                line=number,
                sample_id=row_id,
            )
        try:
            gold = label_to_answer(row.get("label"))
        except ValueError as exc:
            raise DataError(f"{annotations}: {exc}", line=number, sample_id=row_id) from None
        check.total += 1
        said = parse_answer(answer)
        if said is None:
            check.unparseable.append(row_id)
        elif said != gold:
            check.contradicting.append(row_id)
    return check
