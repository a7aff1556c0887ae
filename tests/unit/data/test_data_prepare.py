"""`soundmind data prepare`: row format per modality, both layouts, 16 kHz audio, streaming row groups,
bad input (exit 2, no parquet left behind), and the dev set's 33 contradicting reference chains."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from soundmind.cli import main
from soundmind.data import audio, prepare
from soundmind.errors import DataError
from soundmind.prompt import ANSWER_INSTRUCTION, ENTAILED, NOT_ENTAILED
from tests.support.alr import DEV_ROWS

CONTRADICTING_DEV_ROWS = 33


def _rows(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _annotations(root, split="dev") -> list[dict]:
    return [json.loads(line) for line in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def _no_output_left(out_dir) -> bool:
    return not out_dir.exists() or not any(out_dir.iterdir())


def test_text_rows(spoken_dir, tmp_path):
    (summary,) = prepare.prepare(spoken_dir, tmp_path, "text")
    rows, annotations = _rows(summary.path), _annotations(spoken_dir)

    assert summary.rows == len(rows) == len(annotations)
    assert "audios" not in pq.read_schema(summary.path).names
    for index, (row, source) in enumerate(zip(rows, annotations, strict=True)):
        assert row["data_source"] == "soundmind/alr"
        assert row["ability"] == "logical-reasoning"
        (message,) = row["prompt"]
        assert message == {"role": "user", "content": f"{source['user_content']}\n\n{ANSWER_INSTRUCTION}"}
        assert "<audio>" not in message["content"]
        gold = [NOT_ENTAILED, ENTAILED][source["label"]]
        assert row["reward_model"] == {"style": "rule", "ground_truth": gold}
        info = row["extra_info"]
        assert info["split"] == "dev" and info["index"] == index
        assert (info["id"], info["label"]) == (source["id"], source["label"])
        assert info["ref_answer_words"] == len(source["answer"].split())
        assert info["ref_final_answer"] == gold and info["cot_consistent"] is True
        assert info["question_seconds"] is None
    assert {row["reward_model"]["ground_truth"] for row in rows} == {ENTAILED, NOT_ENTAILED}


@pytest.mark.parametrize("modality", ["audio-text", "audio"])
def test_audio_rows_embed_the_question_as_16k_mono_wav(spoken_dir, tmp_path, modality):
    (summary,) = prepare.prepare(spoken_dir, tmp_path, modality)

    for row, source in zip(_rows(summary.path), _annotations(spoken_dir), strict=True):
        (message,) = row["prompt"]
        (entry,) = row["audios"]
        assert message["content"].count("<audio>") == 1 and message["content"].startswith("<audio>")
        assert message["content"].endswith(ANSWER_INSTRUCTION)
        assert (source["user_content"] in message["content"]) is (modality == "audio-text")
        assert entry["path"] is None
        info = soundfile.info(io.BytesIO(entry["bytes"]))
        assert (info.samplerate, info.channels, info.subtype) == (16_000, 1, "PCM_16")
        source_wav = spoken_dir / "dev" / source["id"] / "question.wav"
        assert info.frames == soundfile.info(source_wav).frames
        assert row["extra_info"]["question_seconds"] == pytest.approx(info.frames / 16_000)
        answer_wav = spoken_dir / "dev" / source["id"] / f"answer_{source['label']}.wav"
        assert row["extra_info"]["ref_answer_seconds"] == pytest.approx(soundfile.info(answer_wav).duration)


def test_other_rates_and_stereo_are_resampled_to_16k_mono(spoken_dir, copy_of, tmp_path):
    root = copy_of(spoken_dir)
    first = _annotations(root)[0]["id"]
    seconds = 1.5
    t = np.arange(int(44_100 * seconds)) / 44_100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(root / "dev" / first / "question.wav", np.stack([tone, tone], axis=1), 44_100)

    (summary,) = prepare.prepare(root, tmp_path / "out", "audio")
    samples = audio.decode_entry(_rows(summary.path)[0]["audios"][0])
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size == pytest.approx(16_000 * seconds, abs=2)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(samples.size, 1 / 16_000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_audio_ref_path_stores_absolute_source_paths(spoken_dir, tmp_path):
    (summary,) = prepare.prepare(spoken_dir, tmp_path, "audio-text", audio_ref="path")
    row = _rows(summary.path)[0]
    (entry,) = row["audios"]
    assert entry["bytes"] is None
    assert entry["path"] == str((spoken_dir / "dev" / row["extra_info"]["id"] / "question.wav").resolve())
    assert audio.decode_entry(entry).size == round(row["extra_info"]["question_seconds"] * 16_000)


def test_both_layouts_give_the_same_rows(spoken_dir, tmp_path, to_hugging_face_layout):
    hugging_face = to_hugging_face_layout(spoken_dir, tmp_path / "hf")
    (published,) = prepare.prepare(spoken_dir, tmp_path / "from-published", "audio-text")
    (from_hf,) = prepare.prepare(hugging_face, tmp_path / "from-hf", "audio-text")
    assert _rows(published.path) == _rows(from_hf.path)


def test_rows_stream_into_fixed_size_row_groups(spoken_dir, tmp_path, monkeypatch):
    """Each row group is written before the next samples are read: memory holds one group."""
    read_before_write = []
    consumed = 0
    original_samples = prepare.iter_samples

    def counting_samples(*args, **kwargs):
        nonlocal consumed
        for sample in original_samples(*args, **kwargs):
            consumed += 1
            yield sample

    original_write = pq.ParquetWriter.write_table

    def recording_write(self, table, *args, **kwargs):
        read_before_write.append((consumed, table.num_rows))
        return original_write(self, table, *args, **kwargs)

    monkeypatch.setattr(prepare, "iter_samples", counting_samples)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", recording_write)
    (summary,) = prepare.prepare(spoken_dir, tmp_path, "audio", row_group_rows=4)

    assert read_before_write == [(4, 4), (6, 2)]  # 6 samples: groups of 4 and 2, each written as read
    metadata = pq.ParquetFile(summary.path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 2]


@pytest.mark.parametrize("damage", ["missing", "unreadable", "empty"])
def test_bad_audio_names_split_line_and_id_and_leaves_no_parquet(spoken_dir, copy_of, tmp_path, capsys, damage):
    root = copy_of(spoken_dir)
    victim = _annotations(root)[4]["id"]  # line 5: past the first row group of 4
    wav = root / "dev" / victim / "question.wav"
    if damage == "missing":
        wav.unlink()
    elif damage == "unreadable":
        wav.write_bytes(b"RIFF but not really a wave file")
    else:
        soundfile.write(wav, np.zeros(0, dtype=np.float32), 16_000)
    out = tmp_path / "out"
    argv = ["data", "prepare", "--data-dir", str(root), "--out", str(out), "--modality", "audio-text"]

    assert main([*argv, "--row-group-rows", "4"]) == 2
    message = capsys.readouterr().err
    assert f"split 'dev', line 5, id '{victim}'" in message
    assert str(wav) in message
    assert {"missing": "does not exist", "unreadable": "unreadable", "empty": "no samples"}[damage] in message
    assert _no_output_left(out)


def test_failure_in_a_later_split_leaves_no_parquet_at_all(spoken_dir, copy_of, tmp_path, write_jsonl):
    root = copy_of(spoken_dir)
    rows = _annotations(root)
    write_jsonl(root / "test.jsonl", [*rows[:2], {**rows[2], "label": 3}])
    for row in rows[:3]:
        shutil.copytree(root / "dev" / row["id"], root / "test" / row["id"])
    out = tmp_path / "out"

    with pytest.raises(DataError, match="label must be 0") as caught:
        prepare.prepare(root, out, "text", splits=["dev", "test"])
    assert (caught.value.split, caught.value.line, caught.value.sample_id) == ("test", 3, rows[2]["id"])
    assert _no_output_left(out)


def test_existing_output_is_kept_when_a_run_fails(spoken_dir, copy_of, tmp_path):
    out = tmp_path / "out"
    (good,) = prepare.prepare(spoken_dir, out, "audio")
    before = good.path.read_bytes()
    root = copy_of(spoken_dir)
    (root / "dev" / _annotations(root)[0]["id"] / "question.wav").unlink()

    with pytest.raises(DataError):
        prepare.prepare(root, out, "audio")
    assert good.path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["dev.parquet"]


def test_unknown_split_is_an_error(spoken_dir, tmp_path, capsys):
    argv = ["data", "prepare", "--data-dir", str(spoken_dir), "--out", str(tmp_path), "--modality", "text"]
    assert main([*argv, "--splits", "dev", "train"]) == 2
    assert "split(s) ['train'] not found" in capsys.readouterr().err


def test_dev_set_has_33_reference_chains_that_contradict_the_label(alr_dev_dir, tmp_path, capsys):
    assert main(["data", "prepare", "--data-dir", str(alr_dev_dir), "--out", str(tmp_path), "--modality", "text"]) == 0
    assert f"{DEV_ROWS} rows; {CONTRADICTING_DEV_ROWS} reference chains" in capsys.readouterr().out

    rows = _rows(tmp_path / "dev.parquet")
    assert len(rows) == DEV_ROWS
    contradicting = [row for row in rows if not row["extra_info"]["cot_consistent"]]
    assert len(contradicting) == CONTRADICTING_DEV_ROWS
    for row in contradicting:
        # The chain ends with the other answer; the label stays the ground truth.
        gold = row["reward_model"]["ground_truth"]
        assert row["extra_info"]["ref_final_answer"] == {ENTAILED: NOT_ENTAILED, NOT_ENTAILED: ENTAILED}[gold]
        assert gold == [NOT_ENTAILED, ENTAILED][row["extra_info"]["label"]]
    assert [row["extra_info"]["index"] for row in rows] == list(range(DEV_ROWS))


def test_question_text_with_a_media_placeholder_is_rejected_for_audio_text(spoken_dir, copy_of, tmp_path, write_jsonl):
    root = copy_of(spoken_dir)
    rows = _annotations(root)
    rows[1]["user_content"] += " See <image> here."
    write_jsonl(root / "dev.jsonl", rows)

    with pytest.raises(DataError, match="contains '<image>'") as caught:
        prepare.prepare(root, tmp_path / "out", "audio-text")
    assert (caught.value.line, caught.value.sample_id) == (2, rows[1]["id"])
    (text,) = prepare.prepare(root, tmp_path / "text", "text")  # no media slots in text rows: fine
    assert text.rows == len(rows)
