"""Prepared rows to chat requests: placeholders, audio entry forms, and errors that name the row."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from soundmind.eval.requests import RowError, to_item

WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


def row(content: str, audios: list | None = None, gold="entailed") -> dict:
    return {
        "prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}],
        "audios": audios,
        "reward_model": {"ground_truth": gold},
        "extra_info": {"id": "0042"},
    }


def test_placeholders_become_input_audio_parts_in_order(tmp_path):
    (tmp_path / "b.wav").write_bytes(WAV + b"b")
    item = to_item(row("<audio> then <audio> question", [WAV + b"a", "b.wav"]), 7, tmp_path / "x.parquet")
    assert (item.index, item.id, item.gold) == (7, "0042", "entailed")
    assert item.messages[0] == {"role": "system", "content": "be brief"}
    parts = item.messages[1]["content"]
    assert [p["type"] for p in parts] == ["input_audio", "text", "input_audio", "text"]
    assert base64.b64decode(parts[2]["input_audio"]["data"]) == WAV + b"b"
    assert parts[3]["text"] == " question"


@pytest.mark.parametrize(
    ("content", "audios", "message"),
    [
        ("<audio>", [b"not a wav file"], "not a WAV file"),
        ("<audio>", [{"path": "missing.wav"}], "cannot read audio"),
        ("<audio>", [{"bytes": None, "path": None}], "must be WAV bytes, a path"),
        ("<audio><audio>", [WAV], "more <audio> placeholders"),
        ("no placeholder", [WAV], "more entries in 'audios'"),
    ],
)
def test_audio_problems_name_file_row_and_id(tmp_path, content, audios, message):
    with pytest.raises(RowError, match=rf"x\.parquet: row 3 \(id 0042\): .*{message}"):
        to_item(row(content, audios), 3, tmp_path / "x.parquet")


def test_bad_ground_truth_names_the_row():
    with pytest.raises(RowError, match="row 0 .*ground_truth must be"):
        to_item(row("q", gold="perhaps"), 0, Path("x.parquet"))
