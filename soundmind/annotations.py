"""ALR annotation files (JSON lines), read line by line: what both the data set's reader
(`soundmind.data.layouts`) and the reference check (`soundmind.reward.references`) stand on.

Whatever is wrong with a line is a `DataError` naming the split (when known), the line and the id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from soundmind.errors import DataError

# Best effort, for the error message only: the id of a line that is not valid JSON.
_ID_IN_BROKEN_LINE = re.compile(r'"id"\s*:\s*"?([^",}\s]+)')


def read_records(path: Path, split: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) of each non-blank line of an annotation file. Whatever is wrong
    with the file (missing, a directory, unreadable, not UTF-8, not JSON, no rows at all) is a
    DataError naming the line; an empty file is one too, since it would make an empty data set
    that looks fine."""
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataError(f"annotation file {path} {what}", split=split)
    count = 0
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})",
                        split=split,
                        line=number,
                    ) from None
                if text.strip():
                    count += 1
                    yield number, _parse_json(text, split, number)
    except OSError as exc:
        raise DataError(f"cannot read annotation file {path}: {exc.strerror or exc}", split=split) from None
    if count == 0:
        raise DataError(f"annotation file {path} has no samples (it is empty or blank)", split=split)


def _parse_json(text: str, split: str | None, number: int) -> dict:
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
    return record


def record_id(record: dict, split: str | None, number: int) -> str:
    sample_id = record.get("id")
    if not isinstance(sample_id, str | int) or isinstance(sample_id, bool) or str(sample_id) == "":
        raise DataError(f"'id' must be a non-empty string or integer, got {sample_id!r}", split=split, line=number)
    return str(sample_id)
