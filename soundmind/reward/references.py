"""How the published reference reasoning agrees with the labels.

Some ALR reference chains end with an answer that contradicts their own label (33 of the 606 dev
rows). The label is the ground truth; this makes the disagreement visible instead of hiding it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from soundmind.prompt import label_to_answer
from soundmind.reward.answer import parse_answer


@dataclass
class ReferenceCheck:
    total: int = 0
    contradicting: list[str] = field(default_factory=list)  # ids whose last line names the other label
    unparseable: list[str] = field(default_factory=list)  # ids whose last line names no single label


def check_references(annotations: Path) -> ReferenceCheck:
    """Reads ALR annotations (`id`, `answer`, `label` per JSON line) and compares the answer each
    reference chain ends with against the row's label."""
    check = ReferenceCheck()
    with Path(annotations).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row_id, answer, gold = str(row["id"]), row["answer"], label_to_answer(row["label"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{annotations}:{number}: not an ALR annotation row ({exc})") from None
            check.total += 1
            said = parse_answer(answer)
            if said is None:
                check.unparseable.append(row_id)
            elif said != gold:
                check.contradicting.append(row_id)
    return check
