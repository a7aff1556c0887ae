"""The ALR dev annotations the tests read (`../shared/data/alr/dev.jsonl` beside the repository).

CI always has them, so there their absence fails the test; elsewhere it skips with the path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DEV_JSONL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "alr" / "dev.jsonl"
DEV_ROWS = 606


def dev_rows() -> list[dict]:
    if not DEV_JSONL.is_file():
        message = f"ALR dev annotations not found at {DEV_JSONL}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI must provide them)")
        pytest.skip(message)
    with DEV_JSONL.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
