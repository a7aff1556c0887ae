"""`soundmind reward check` on every kind of bad input: a message and exit 2, never a traceback;
and the Hugging Face layout's `metadata.jsonl` is read like the published one."""

from __future__ import annotations

import json

import pytest

from soundmind.cli import main
from soundmind.errors import EXIT_USAGE

GOOD = {"id": "r1", "user_content": "q", "answer": "x\nAnswer: entailed", "label": 1}


def _write(path, *lines):
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    )
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing.jsonl", "does not exist"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: _write(tmp / "a.jsonl", GOOD, {"id": "r2", "label": 0}), "line 2, id 'r2': "),
        (lambda tmp: _write(tmp / "a.jsonl", {**GOOD, "label": "yes"}), "label must be 0 (not-entailed) or 1"),
        (lambda tmp: _write(tmp / "a.jsonl", {**GOOD, "label": 1.0}), "label must be 0 (not-entailed) or 1"),
        (lambda tmp: _write(tmp / "a.jsonl", {**GOOD, "id": None}), "'id' must be a non-empty string"),
        (lambda tmp: _write(tmp / "a.jsonl", b"\xff\xfe"), "is not UTF-8 text"),
        (lambda tmp: _write(tmp / "a.jsonl", b"[1, 2]"), "expected a JSON object"),
        (lambda tmp: _write(tmp / "a.jsonl", b"  "), "has no samples"),
    ],
    ids=["missing", "directory", "missing-field", "bad-label", "float-label", "no-id", "not-utf8", "array", "blank"],
)
def test_bad_input_is_a_message_and_exit_2(tmp_path, capsys, make, expected):
    assert main(["reward", "check", str(make(tmp_path))]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("soundmind reward check: ") and expected in err and "Traceback" not in err


def test_the_hugging_face_layout_is_read_too(tmp_path, capsys):
    rows = [
        {"id": "h1", "annotation_question": "q", "annotation_answer": "x\nAnswer: entailed", "label": 0},
        {"id": "h2", "annotation_question": "q", "annotation_answer": "x\nAnswer: entailed", "label": 1},
    ]
    assert main(["reward", "check", str(_write(tmp_path / "metadata.jsonl", *rows))]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 reference chains end with an answer that contradicts the label" in out and "contradicting: h1" in out
