"""The one error data commands raise for bad input (exit code 2, see `soundmind.errors`)."""

from __future__ import annotations

from soundmind.errors import EXIT_USAGE, SoundMindError


class DataError(SoundMindError):
    """Bad input data. The message names where: split, line of the annotation file, and sample id
    (each when known), then what is wrong and what would be valid."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str, *, split: str | None = None, line: int | None = None, sample_id=None):
        self.reason = reason
        self.split = split
        self.line = line
        self.sample_id = sample_id
        where = [
            f"split {split!r}" if split is not None else None,
            f"line {line}" if line is not None else None,
            f"id {sample_id!r}" if sample_id is not None else None,
        ]
        where_text = ", ".join(part for part in where if part)
        super().__init__(f"{where_text}: {reason}" if where_text else reason)
