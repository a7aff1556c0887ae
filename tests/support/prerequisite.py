"""A test's missing prerequisite (a tool, a data file, a cluster feature): in CI it fails the run;
elsewhere (a developer's machine without Docker, say) it skips the test, saying what is missing."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def missing(why: str) -> NoReturn:
    if in_ci():
        pytest.fail(why, pytrace=False)
    pytest.skip(why)  # outside CI only: in CI the line above fails
