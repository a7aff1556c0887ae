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
    end = len(text)
    while end and text[end - 1].isspace():  # not rstrip(): that copies the whole response
        end -= 1
    return text.rfind("\n", 0, end) + 1, end


def _verdict(negated: bool, plain: bool) -> str | None:
    if negated == plain:  # both, or neither: no answer
        return None
    return NOT_ENTAILED if negated else ENTAILED


def _classify(segment: str) -> str | None:
    negated = plain = False
    for mention in _LABEL_MENTION.finditer(segment):
        if mention.group("neg") or mention.group("contracted"):
            negated = True
        else:
            plain = True
    return _verdict(negated, plain)


def _parse_line(text: str, start: int, end: int) -> str | None:
    line = text[start:end]
    low = line.lower()
    if len(low) == len(line) and "\u0131" not in line and "\u017f" not in line:
        return _parse_lowered_line(low)
    # After the first "Answer:" marker on the line, if there is one; else the whole line. (The
    # first, so that "'Answer: entailed' or 'Answer: not-entailed'" names both and reads as None.)
    marker = _ANSWER_MARKER.search(line)
    return _classify(line[marker.end() :] if marker else line)


# The same reading on the lower-cased line, with str.find instead of a regex scan of every
# position: a policy's last "line" can be its whole 10 kB response, where the two case-insensitive
# scans above cost ~0.2 us per character (~2,000 responses/s); finding the words first costs ~1 ns.
# Used when lower-casing keeps every index (the length is unchanged) and the line has neither of
# the two letters re.IGNORECASE also matches for i and s (dotless i, long s). The regexes stay the
# definition; a property test holds the two readings equal.
_ANSWER_MARKER_AT = re.compile(r"answer[\s*_]*(?:is[\s*_]*)?[:：]")
_LABEL = "entailed"


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _parse_lowered_line(low: str) -> str | None:
    position = low.find("answer")
    while position >= 0:
        marker = _ANSWER_MARKER_AT.match(low, position)
        if marker:
            low = low[marker.end() :]
            break
        position = low.find("answer", position + 1)
    negated = plain = False
    position = low.find(_LABEL)
    while position >= 0:
        end = position + len(_LABEL)
        if end == len(low) or not _is_word(low[end]):
            if _negated(low, position):
                negated = True
            elif position == 0 or not _is_word(low[position - 1]):
                plain = True
            if negated and plain:  # both named: no answer, whatever follows
                break
        position = low.find(_LABEL, end)
    return _verdict(negated, plain)


def _negated(low: str, position: int) -> bool:
    """Whether the mention at `position` is preceded by "not"/"non" (a word, then blanks, "_" or
    "-") or by "n't" and at least one blank, as _LABEL_MENTION reads it."""
    start = position
    while start and (low[start - 1].isspace() or low[start - 1] in "_-"):
        start -= 1
    if low[start - 3 : start] in ("not", "non") and (start == 3 or (start > 3 and not _is_word(low[start - 4]))):
        return True
    blank = position
    while blank and low[blank - 1].isspace():
        blank -= 1
    return blank < position and low[blank - 3 : blank] in ("n't", "n’t")


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
