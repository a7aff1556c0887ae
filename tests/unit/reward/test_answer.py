"""parse_answer and the format check, by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soundmind.prompt import ANSWER_INSTRUCTION, ENTAILED, NOT_ENTAILED
from soundmind.reward import parse_answer, read_response


@pytest.mark.parametrize(
    "text",
    [
        "not entailed",
        "not-entailed",
        "Not Entailed",
        "NOT-ENTAILED",
        "non-entailed",
        "notentailed",
        "not   entailed",
        "  not entailed .  ",
        "Answer: not entailed.",
        "Answer:not-entailed",
        "**Answer:** not entailed",
        "answer is: Not Entailed.",
        "So the conclusion isn't entailed.",
        "reasoning that says entailed\nAnswer: not-entailed\n\n",
    ],
)
def test_reads_not_entailed(text):
    assert parse_answer(text) == NOT_ENTAILED


@pytest.mark.parametrize(
    "text",
    [
        "entailed",
        "Entailed.",
        "Answer: entailed",
        "Answer:   ENTAILED .",
        "**Answer**: entailed",
        "it is not obvious, but\nAnswer: entailed",
    ],
)
def test_reads_entailed(text):
    assert parse_answer(text) == ENTAILED


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\n",
        "Answer:",
        "Answer: maybe",
        "Answer: entailed or not entailed",
        "Answer: entailed\nThanks for asking.",  # the answer must be on the last line
        "disentailed",
        ANSWER_INSTRUCTION,  # names both answers: an echoed prompt is no answer
    ],
)
def test_both_or_neither_is_no_answer(text):
    assert parse_answer(text) is None


def test_non_text_is_no_answer():
    assert parse_answer(None) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "response",
    [
        "<think>\nPremises...\n</think>\nAnswer: entailed",
        "<think>x</think>\nAnswer: not-entailed\n",
        "\n  <think>\nmulti\nline\n</think>\n\n\nAnswer: entailed  \n",
    ],
)
def test_format_accepts_what_the_instruction_asks(response):
    assert read_response(response).format_ok


@pytest.mark.parametrize(
    "response",
    [
        "Answer: entailed",  # no reasoning block
        "<think>x</think> Answer: entailed",  # answer not on its own line
        "<think>x</think>\nAnswer: entailed.",  # not exactly the asked line
        "<think>x</think>\nanswer: entailed",
        "<think>x</think>\nAnswer: not entailed",
        "<think>x</think>\nsummary\nAnswer: entailed",  # text between </think> and the answer
        "<think>   </think>\nAnswer: entailed",  # blank reasoning
        "<think>a<think>b</think>\nAnswer: entailed",  # nested tag
        "<think>a</think>b</think>\nAnswer: entailed",
        "<think>x\nAnswer: entailed",  # never closed
        "preamble <think>x</think>\nAnswer: entailed",
    ],
)
def test_format_rejects_anything_else(response):
    assert not read_response(response).format_ok


def test_reasoning_length_is_the_think_block():
    reading = read_response("<think>12345</think>\nAnswer: entailed")
    assert reading.reasoning_chars == 5
    assert read_response("Answer: entailed").reasoning_chars == 0


_PIECES = st.sampled_from(
    ["<think>", "</think>", "Answer:", " entailed", "not", "-", "non", "n't", "\n", " ", ".", "**", "：", "think>"]
)
_TEXT = st.one_of(st.text(), st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30).map("".join))


@given(_TEXT)
def test_parse_answer_never_crashes_and_answers_a_label_or_none(text):
    assert parse_answer(text) in (ENTAILED, NOT_ENTAILED, None)


@given(_TEXT)
def test_read_response_agrees_with_parse_answer(text):
    reading = read_response(text)
    assert reading.pred == parse_answer(text)
    assert 0 <= reading.reasoning_chars <= len(text)
    if reading.format_ok:
        assert reading.pred in (ENTAILED, NOT_ENTAILED)


_LINE_PIECES = st.sampled_from(
    [
        "answer", "Answer", "ANSWER", "aNsWeR", "is", ":", "：", "*", "_", "-", " ", "\t", "\x1f", "\u3000",
        "not", "NOT", "non", "Non", "n't", "N'T", "n’t", "entailed", "Entailed", "ENTAILED", "ntailed",
        "x", "9", "é", "¬", "ı", "ſ", "İ", "K", "s", "i",
    ]
)  # fmt: skip


@given(st.lists(_LINE_PIECES, max_size=25).map("".join))
def test_the_fast_reading_of_a_line_equals_the_regex_definition(line):
    """parse_answer finds the words with str.find on the lower-cased line (a long line costs ~1 ns
    a character, not ~0.2 us); the regexes _ANSWER_MARKER and _LABEL_MENTION define the reading."""
    from soundmind.reward.answer import _ANSWER_MARKER, _classify

    marker = _ANSWER_MARKER.search(line)
    assert parse_answer(line) == _classify(line[marker.end() :] if marker else line)
