"""Reading a response: which answer it gives, and whether it is in the format the instruction asks for.

Both work from the end of the text. The answer is on the last non-blank line, so finding it costs the
length of that line, not of the response; the format check adds one forward scan of the reasoning
(for stray think tags). A reference-length response (~840 words, ~5 kB) is read in a few
microseconds; `benchmarks/reward_bench.py` measures it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from soundmind.prompt import ENTAILED, NOT_ENTAILED

_CLOSE_TAG = "</think>"

# "Answer:" (any case, optional markdown emphasis, "answer is:"), searched on the last line only.
_ANSWER_MARKER = re.compile(r"answer[\s*_]*(?:is[\s*_]*)?[:：]", re.IGNORECASE)
# One alternative per mention of the label: negated ("not entailed", "not-entailed", "non-entailed",
# "notentailed", "isn't entailed") or plain ("entailed"). A negation is only recognised directly in
# front of the word, so "not" elsewhere in the line does not flip an answer.
_LABEL_MENTION = re.compile(
    r"(?:\b(?P<neg>not|non)[\s_-]*|(?P<contracted>n['’]t)\s+|\b)entailed\b",
    re.IGNORECASE,
)
# The format the instruction asks for: the last line is exactly one of these (surrounding blanks aside).
_FORMAT_ANSWER_LINE = re.compile(rf"[ \t]*Answer: (?:{ENTAILED}|{NOT_ENTAILED})[ \t]*")
_LEADING_OPEN_TAG = re.compile(r"\s*<think>")
_NON_BLANK = re.compile(r"\s*\S")


class Reading(NamedTuple):
    """What `read_response` found. `reasoning_chars` is the length of the text inside
    <think>...</think> when the format is right, else 0 (there is no reasoning block to measure)."""

    pred: str | None
    format_ok: bool
    reasoning_chars: int


def _last_line_bounds(text: str) -> tuple[int, int]:
    """(start, end) of the last non-blank line; (end, end) when the text is blank."""
    end = len(text.rstrip())
    return text.rfind("\n", 0, end) + 1, end


def _classify(segment: str) -> str | None:
    negated = plain = False
    for mention in _LABEL_MENTION.finditer(segment):
        if mention.group("neg") or mention.group("contracted"):
            negated = True
        else:
            plain = True
    if negated == plain:  # both, or neither: no answer
        return None
    return NOT_ENTAILED if negated else ENTAILED


def _parse_line(text: str, start: int, end: int) -> str | None:
    line = text[start:end]
    # After the first "Answer:" marker on the line, if there is one; else the whole line. (The
    # first, so that "'Answer: entailed' or 'Answer: not-entailed'" names both and reads as None.)
    marker = _ANSWER_MARKER.search(line)
    return _classify(line[marker.end() :] if marker else line)


def parse_answer(text: str) -> str | None:
    """The answer a text gives on its last non-blank line: `entailed`, `not-entailed`, or None.

    Lenient about spelling, on purpose (the format reward is where strictness lives): "not entailed",
    "not-entailed", "Not Entailed", "non-entailed", "notentailed", "isn't entailed", extra spaces, a
    trailing period and markdown emphasis all read as not-entailed; "entailed" as entailed. A line
    naming both answers, or neither, gives None. Only the last line counts, so reasoning that
    mentions either word on the way does not change the answer. Works on a whole response and on a
    single line (e.g. the last line of the ALR reference reasoning).
    """
    if not isinstance(text, str):
        return None
    start, end = _last_line_bounds(text)
    return _parse_line(text, start, end)


def read_response(text: str) -> Reading:
    """Answer and format of a response in one reading.

    The format is right when the response is `<think>REASONING</think>`, then (after only blank
    space) a last line that is exactly `Answer: entailed` or `Answer: not-entailed`; the reasoning
    is not blank and holds no further think tags. Blank space around the whole response is allowed.
    """
    start, end = _last_line_bounds(text)
    pred = _parse_line(text, start, end)
    opening = _LEADING_OPEN_TAG.match(text)
    if opening is None or not _FORMAT_ANSWER_LINE.fullmatch(text, start, end):
        return Reading(pred, False, 0)
    reasoning_start = opening.end()
    close = text.rfind(_CLOSE_TAG, reasoning_start, start)
    format_ok = (
        close >= 0
        and not text[close + len(_CLOSE_TAG) : start].strip()
        and _NON_BLANK.match(text, reasoning_start, close) is not None
        # "think>" catches both a second <think> and an earlier </think> in one scan.
        and text.find("think>", reasoning_start, close) < 0
    )
    return Reading(pred, format_ok, close - reasoning_start if format_ok else 0)
