"""Names that come from data (sample ids, split names) and become path components.

A name is used in a path only after `safe_name` accepts it: letters, digits, `.`, `_` and `-`,
starting with a letter or digit, at most 128 characters. So `../x`, `/etc`, `a/b`, `.hidden`, an
empty name and control characters never reach the file system.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SAFE_NAME_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def safe_name(value: str, what: str) -> str:
    """`value` when it is a safe path component; ValueError naming `what` otherwise."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r:.80} cannot be used in a file name; it must be {SAFE_NAME_RULE}")
    return value


def inside(root: Path, relative: str, what: str) -> Path:
    """`root / relative` for a relative path from data (e.g. a Hugging Face `question_file_name`),
    each of whose components must be a safe name; ValueError otherwise."""
    parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
    if not parts or relative.startswith("/"):
        raise ValueError(f"{what} {relative!r:.80} must be a relative path inside {root}")
    for part in parts:
        safe_name(part, f"{what} component")
    return root.joinpath(*parts)
