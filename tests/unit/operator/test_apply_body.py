"""Server-side apply bodies: the API server decodes them as YAML, which has no escape for a UTF-16
surrogate pair (json.dumps' spelling of a character outside the Basic Multilingual Plane), so such
a character must travel raw, and every other string exactly as it was (no cluster; the refusal
itself is tests/integration/test_fuzzed_specs.py's regression test)."""

import json
import re

import pytest

from soundmind_operator.kube import apply_body

SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]")


@pytest.mark.parametrize(
    "text",
    [
        "ü漢字😀",  # the fuzz's find: BMP escapes stay, the emoji goes raw
        "𝄞" * 3 + "x",
        "\\ud83d\\ude00",  # a backslash and the letters: no escape, left alone
        "\\😀",  # an escaped backslash right before a pair
        "\\\\😀",
        'tab\tquote"nl\n😀',
        "plain",
    ],
)
def test_an_apply_body_has_no_surrogate_escape_and_keeps_every_string(text: str):
    manifest = {"metadata": {"name": "x", "annotations": {"a": text}}, "spec": {"args": [text, {"k": text}]}}
    body = apply_body(manifest)
    assert json.loads(body) == manifest
    assert not SURROGATE_ESCAPE.search(body.decode()), body
