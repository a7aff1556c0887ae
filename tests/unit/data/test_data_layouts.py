"""Both ALR layouts are detected and read alike; bad lines stop with the split, line and id."""

from __future__ import annotations

import pytest

from soundmind.data.layouts import Layout, detect_layout, iter_samples, present_splits
from soundmind.errors import DataError


def _row(sample_id: str, label: int = 1) -> dict:
    return {"id": sample_id, "user_content": f"question {sample_id}", "answer": "because\nAnswer: x", "label": label}


def test_published_layout(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "dev.jsonl", [_row("a", 0), _row("b", 1)])
    write_jsonl(tmp_path / "test.jsonl", [_row("c")])

    assert detect_layout(tmp_path) is Layout.PUBLISHED
    assert present_splits(tmp_path, Layout.PUBLISHED) == ["dev", "test"]
    first, second = iter_samples(tmp_path, "dev", Layout.PUBLISHED)
    assert (first.id, first.line, first.label, first.question) == ("a", 1, 0, "question a")
    assert first.question_audio == tmp_path / "dev" / "a" / "question.wav"
    assert first.answer_audio == tmp_path / "dev" / "a" / "answer_0.wav"
    assert second.answer_audio == tmp_path / "dev" / "b" / "answer_1.wav"


def test_hugging_face_layout(tmp_path, write_jsonl):
    record = {
        "id": 7,
        "question_file_name": "q/7.wav",
        "answer_file_name": "a/7.wav",
        "annotation_question": "the question",
        "annotation_answer": "the reasoning",
        "label": 0,
    }
    write_jsonl(tmp_path / "train" / "metadata.jsonl", [record])

    assert detect_layout(tmp_path) is Layout.HUGGING_FACE
    assert present_splits(tmp_path, Layout.HUGGING_FACE) == ["train"]
    (sample,) = iter_samples(tmp_path, "train", Layout.HUGGING_FACE)
    assert (sample.id, sample.question, sample.answer, sample.label) == ("7", "the question", "the reasoning", 0)
    assert sample.question_audio == tmp_path / "train" / "q" / "7.wav"
    assert sample.answer_audio == tmp_path / "train" / "a" / "7.wav"


def test_no_layout_and_both_layouts_are_errors(tmp_path, write_jsonl):
    with pytest.raises(DataError, match="no ALR annotation file found"):
        detect_layout(tmp_path)
    write_jsonl(tmp_path / "dev.jsonl", [_row("a")])
    write_jsonl(tmp_path / "dev" / "metadata.jsonl", [])
    with pytest.raises(DataError, match="both layouts"):
        detect_layout(tmp_path)


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "dev.jsonl", [_row("a"), "", "   ", _row("b")])
    assert [(s.id, s.line) for s in iter_samples(tmp_path, "dev", Layout.PUBLISHED)] == [("a", 1), ("b", 4)]


@pytest.mark.parametrize(
    ("line", "reason", "sample_id"),
    [
        ('{"id": "0042", "label": 1, "user_content": "q", "answer": ', "malformed JSON", "0042"),
        ("not json at all", "malformed JSON", None),
        ("[1, 2]", "expected a JSON object", None),
        ({"id": "0042", "user_content": "q", "answer": "a", "label": 2}, "label must be 0", "0042"),
        ({"id": "0042", "user_content": "q", "answer": "a", "label": "1"}, "label must be 0", "0042"),
        ({"id": "0042", "user_content": "q", "answer": "a", "label": True}, "label must be 0", "0042"),
        ({"id": "0042", "user_content": "q", "answer": "a"}, "label must be 0", "0042"),
        ({"id": "0042", "answer": "a", "label": 1}, "'user_content' must be a string", "0042"),
        ({"user_content": "q", "answer": "a", "label": 1}, "'id' must be", None),
    ],
)
def test_bad_line_names_split_line_and_id(tmp_path, write_jsonl, line, reason, sample_id):
    write_jsonl(tmp_path / "test.jsonl", [_row("a"), _row("b"), line])

    with pytest.raises(DataError, match=reason) as caught:
        list(iter_samples(tmp_path, "test", Layout.PUBLISHED))
    error = caught.value
    assert (error.split, error.line, error.sample_id) == ("test", 3, sample_id)
    assert str(error).startswith("split 'test', line 3")
    if sample_id:
        assert f"id '{sample_id}'" in str(error)
