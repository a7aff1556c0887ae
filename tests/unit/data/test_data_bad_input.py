"""`soundmind data` under hostile input (issue 10): cut audio, empty or non-UTF-8 annotation files,
ids and split names that try to leave the output directory, outputs that cannot be written, and a
failure while publishing several splits. Each ends in a message and a documented exit code, never
a traceback and never a silently wrong data set."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from soundmind import atomic
from soundmind.cli import main
from soundmind.data import prepare
from soundmind.errors import EXIT_CANNOT_WRITE, EXIT_USAGE, DataError


def _prepare_argv(root, out, *extra):
    return ["data", "prepare", "--data-dir", str(root), "--out", str(out), "--modality", "audio-text", *extra]


def _first_id(root, split="dev"):
    return json.loads((root / f"{split}.jsonl").read_text().splitlines()[0])["id"]


@pytest.mark.parametrize("keep", ["100 bytes", "half"])
@pytest.mark.parametrize("which", ["question.wav", "answer"])
def test_a_cut_wav_is_refused_naming_split_line_id_and_file(spoken_dir, copy_of, tmp_path, capsys, keep, which):
    root = copy_of(spoken_dir)
    sample_dir = root / "dev" / _first_id(root)
    wav = sample_dir / which if which == "question.wav" else next(sample_dir.glob("answer_*.wav"))
    data = wav.read_bytes()
    wav.write_bytes(data[:100] if keep == "100 bytes" else data[: len(data) // 2])
    out = tmp_path / "out"

    assert main(_prepare_argv(root, out)) == EXIT_USAGE
    message = capsys.readouterr().err
    assert f"split 'dev', line 1, id '{_first_id(root)}'" in message
    assert str(wav) in message and "cut short" in message
    assert not out.exists()


def test_a_question_too_short_to_be_spoken_is_refused(spoken_dir, copy_of, tmp_path, capsys):
    import numpy as np
    import soundfile

    root = copy_of(spoken_dir)
    soundfile.write(root / "dev" / _first_id(root) / "question.wav", np.zeros(160, dtype=np.float32), 16_000)
    assert main(_prepare_argv(root, tmp_path / "out")) == EXIT_USAGE
    assert "lasts 0.010 s; a spoken question lasts 1 s to" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n"])
def test_an_empty_or_blank_annotation_file_is_an_error_not_an_empty_parquet(tmp_path, capsys, content):
    root = tmp_path / "alr"
    root.mkdir()
    (root / "dev.jsonl").write_bytes(content)
    out = tmp_path / "out"
    argv = ["data", "prepare", "--data-dir", str(root), "--out", str(out), "--modality", "text"]
    assert main(argv) == EXIT_USAGE
    assert "has no samples (it is empty or blank)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["prepare", "synth --from"])
def test_non_utf8_annotations_name_the_line(tmp_path, capsys, command):
    root = tmp_path / "alr"
    root.mkdir()
    good = {"id": "a1", "user_content": "q", "answer": "r\nAnswer: entailed", "label": 1}
    (root / "dev.jsonl").write_bytes(json.dumps(good).encode() + b"\n" + b'{"id": "a2", "answer": "caf\xe9"}\n')
    if command == "prepare":
        argv = ["data", "prepare", "--data-dir", str(root), "--out", str(tmp_path / "out"), "--modality", "text"]
    else:
        argv = ["data", "synth", "--out", str(tmp_path / "out"), "--from", str(root / "dev.jsonl")]
    assert main(argv) == EXIT_USAGE
    assert "split 'dev', line 2: " in (err := capsys.readouterr().err) and "is not UTF-8 text (byte 0xe9" in err


@pytest.mark.parametrize("bad_id", ["../escaped", "/tmp/abs", "a/b", ".hidden", "x\ny"])
def test_synth_ids_that_would_leave_out_are_refused(tmp_path, capsys, write_jsonl, bad_id):
    source = write_jsonl(
        tmp_path / "in" / "dev.jsonl", [{"id": bad_id, "user_content": "q", "answer": "a", "label": 0}]
    )
    out = tmp_path / "deep" / "out"
    assert main(["data", "synth", "--out", str(out), "--from", str(source)]) == EXIT_USAGE
    assert "cannot be used in a file name" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["in", "in/dev.jsonl"]


@pytest.mark.parametrize("split", ["../up", "a/b", ""])
def test_synth_split_names_that_would_leave_out_are_refused(tmp_path, capsys, split):
    out = tmp_path / "deep" / "out"
    assert main(["data", "synth", "--out", str(out), "--limit", "1", "--split", split]) == EXIT_USAGE
    assert "split name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_hugging_face_file_names_cannot_leave_the_split(spoken_dir, tmp_path, to_hugging_face_layout, capsys):
    root = to_hugging_face_layout(spoken_dir, tmp_path / "hf")
    metadata = root / "dev" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    rows[1]["question_file_name"] = "../../../etc/passwd"
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(_prepare_argv(root, tmp_path / "out")) == EXIT_USAGE
    assert "split 'dev', line 2" in (err := capsys.readouterr().err) and "question_file_name" in err


@pytest.mark.parametrize(("first", "again"), [("a1", "a1"), (7, "7")])
def test_a_duplicate_id_is_refused_naming_both_lines(tmp_path, capsys, write_jsonl, first, again):
    """Issue 21, point 6: the second row would train the same sample twice (and, in the published
    layout, read the first one's audio directory)."""
    rows = [
        {"id": first, "user_content": "All A are B. Are all B A?", "answer": "r\nAnswer: not-entailed", "label": 0},
        {"id": "b2", "user_content": "All A are B. Is x, an A, a B?", "answer": "r\nAnswer: entailed", "label": 1},
        "",
        {"id": again, "user_content": "Some A are B. Are all A B?", "answer": "r\nAnswer: not-entailed", "label": 0},
    ]
    root = tmp_path / "alr"
    write_jsonl(root / "dev.jsonl", rows)
    out = tmp_path / "out"
    argv = ["data", "prepare", "--data-dir", str(root), "--out", str(out), "--modality", "text"]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == (
        f"soundmind data prepare: split 'dev', line 4, id '{again}': {root / 'dev.jsonl'} has this id on line 1 "
        "too; each sample needs its own id\n"
    )
    assert not out.exists()


def test_a_duplicate_id_in_the_hugging_face_layout_is_refused(spoken_dir, tmp_path, to_hugging_face_layout, capsys):
    root = to_hugging_face_layout(spoken_dir, tmp_path / "hf")
    metadata = root / "dev" / "metadata.jsonl"
    rows = [json.loads(line) for line in metadata.read_text().splitlines()]
    rows[2]["id"] = rows[0]["id"]
    metadata.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert main(_prepare_argv(root, tmp_path / "out")) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"split 'dev', line 3, id '{rows[0]['id']}': {metadata} has this id on line 1 too" in err


@pytest.mark.parametrize("command", ["prepare", "synth"])
def test_an_output_that_cannot_be_written_exits_73(spoken_dir, tmp_path, capsys, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    if command == "prepare":
        argv = _prepare_argv(spoken_dir, out)
    else:
        argv = ["data", "synth", "--out", str(out), "--limit", "1"]
    assert main(argv) == EXIT_CANNOT_WRITE
    err = capsys.readouterr().err
    assert f"soundmind data {command}: cannot write {blocker}" in err and "not a directory" in err.lower()


def _two_splits(spoken_dir, copy_of):
    root = copy_of(spoken_dir)
    for split in ("train",):
        (root / f"{split}.jsonl").write_text((root / "dev.jsonl").read_text())
        (root / split).symlink_to(root / "dev", target_is_directory=True)
    return root


def test_a_failed_publish_leaves_the_previous_complete_set(spoken_dir, copy_of, tmp_path, monkeypatch):
    """The old bug: the later split's rename failed after the earlier one's, leaving a new
    train.parquet beside an old dev.parquet. Now the set is one directory swapped in at once."""
    root = _two_splits(spoken_dir, copy_of)
    out = tmp_path / "out"
    prepare.prepare(root, out, "text", splits=["train", "dev"])
    (out / "notes.txt").write_text("kept")
    before = {name: (out / name).read_bytes() for name in ("train.parquet", "dev.parquet")}

    rows = [json.loads(line) for line in (root / "dev.jsonl").read_text().splitlines()]
    for split in ("train", "dev"):  # new content in both splits
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))

    def failing_exchange(first, second):
        raise OSError(5, "Input/output error (injected)")

    monkeypatch.setattr(atomic, "exchange", failing_exchange)
    with pytest.raises(atomic.OutputError, match="injected"):
        prepare.prepare(root, out, "text", splits=["train", "dev"])
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in out.iterdir()) == ["dev.parquet", "notes.txt", "train.parquet"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left

    monkeypatch.undo()
    prepare.prepare(root, out, "text", splits=["train", "dev"])
    assert [pq.ParquetFile(out / n).metadata.num_rows for n in ("train.parquet", "dev.parquet")] == [3, 3]
    assert (out / "notes.txt").read_text() == "kept"  # what the run did not write is carried over


def test_a_failure_in_the_later_split_leaves_the_previous_set(spoken_dir, copy_of, tmp_path):
    root = _two_splits(spoken_dir, copy_of)
    out = tmp_path / "out"
    prepare.prepare(root, out, "text", splits=["train", "dev"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (root / "dev.jsonl").write_text('{"id": "broken"\n')
    with pytest.raises(DataError, match="malformed JSON"):
        prepare.prepare(root, out, "text", splits=["train", "dev"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
