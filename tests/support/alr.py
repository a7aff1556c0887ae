"""The ALR dev annotations the tests read: `../shared/data/alr/dev.jsonl` beside the repository, or
the file `SOUNDMIND_ALR_DEV` names.

CI always has them, so there their absence fails the test; elsewhere it skips, saying where the
file must be and how to point at another copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.prerequisite import missing

DEV_JSONL_ENV = "SOUNDMIND_ALR_DEV"
DEV_JSONL = Path(
    os.environ.get(DEV_JSONL_ENV)
    or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alr" / "dev.jsonl"
)
DEV_ROWS = 606


def dev_rows() -> list[dict]:
    if not DEV_JSONL.is_file():
        message = (
            f"ALR dev annotations ({DEV_ROWS} rows of id, user_content, answer, label) not found at {DEV_JSONL}: "
            f"put dev.jsonl there, or set {DEV_JSONL_ENV}=PATH"
        )
        missing(message)
    with DEV_JSONL.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
