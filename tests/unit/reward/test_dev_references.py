"""The reward against every ALR dev reference: the label decides, never the reference's last line."""

from __future__ import annotations

import re

import pytest

from soundmind.prompt import ENTAILED, LABELS, NOT_ENTAILED
from soundmind.reward import compute_score, parse_answer
from soundmind.reward.references import check_references
from tests.support.alr import DEV_JSONL, DEV_ROWS, dev_rows

# The independent oracle for "what the line says": every dev reference ends with one of these.
_REFERENCE_LAST_LINE = re.compile(r"answer:\s*(not[\s-])?entailed\.?", re.IGNORECASE)
CONTRADICTING_DEV_ROWS = 33


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rows = dev_rows()
    assert len(rows) == DEV_ROWS
    return rows


def _split_reference(answer: str) -> tuple[str, str]:
    """(reasoning without its last line, last non-blank line)."""
    body = answer.rstrip()
    cut = body.rfind("\n")
    return body[:cut], body[cut + 1 :].strip()


def _what_it_says(line: str) -> str:
    match = _REFERENCE_LAST_LINE.fullmatch(line)
    assert match, f"unexpected reference last line {line!r}"
    return NOT_ENTAILED if match.group(1) else ENTAILED


def test_parse_answer_reads_every_reference_last_line(rows):
    last_lines = [_split_reference(r["answer"])[1] for r in rows]
    assert sum(parse_answer(line) == _what_it_says(line) for line in last_lines) == DEV_ROWS


def test_parse_answer_reads_whole_references_by_their_last_line(rows):
    agree = sum(parse_answer(r["answer"]) == _what_it_says(_split_reference(r["answer"])[1]) for r in rows)
    assert agree == DEV_ROWS


def test_gold_answer_scores_and_flipped_answer_does_not(rows):
    gold_ok = flipped_ok = 0
    for row in rows:
        reasoning, _ = _split_reference(row["answer"])
        gold = LABELS[row["label"]]
        flipped = LABELS[1 - row["label"]]
        extra = {"ref_answer_words": len(row["answer"].split())}
        right = compute_score("soundmind/alr", f"<think>\n{reasoning}\n</think>\nAnswer: {gold}", gold, extra)
        wrong = compute_score("soundmind/alr", f"<think>\n{reasoning}\n</think>\nAnswer: {flipped}", gold, extra)
        gold_ok += right["acc"] == 1.0 and right["pred"] == gold and right["format_ok"] and right["length"] == 1.0
        flipped_ok += wrong["acc"] == 0.0 and wrong["pred"] == flipped and wrong["format_ok"]
        assert right["score"] - wrong["score"] == pytest.approx(2.0)
    assert (gold_ok, flipped_ok) == (DEV_ROWS, DEV_ROWS)


def test_ground_truth_is_the_label_not_the_reference_chain(rows):
    # Scoring each unmodified reference against its label: exactly the contradicting chains miss.
    contradicting = {r["id"] for r in rows if _what_it_says(_split_reference(r["answer"])[1]) != LABELS[r["label"]]}
    missed = {r["id"] for r in rows if compute_score("soundmind/alr", r["answer"], r["label"])["acc"] == 0.0}
    assert len(contradicting) == CONTRADICTING_DEV_ROWS
    assert missed == contradicting


def test_references_report_names_the_contradicting_rows(rows):
    report = check_references(DEV_JSONL)
    expected = sorted(r["id"] for r in rows if _what_it_says(_split_reference(r["answer"])[1]) != LABELS[r["label"]])
    assert report.total == DEV_ROWS
    assert report.unparseable == []
    assert report.contradicting == expected
    assert len(report.contradicting) == CONTRADICTING_DEV_ROWS


def test_reward_check_command_prints_them(rows, capsys):
    from soundmind.cli import main

    assert main(["reward", "check", str(DEV_JSONL)]) == 0
    out = capsys.readouterr().out
    assert f"{CONTRADICTING_DEV_ROWS} of {DEV_ROWS}" in out
    for row_id in check_references(DEV_JSONL).contradicting:
        assert row_id in out
