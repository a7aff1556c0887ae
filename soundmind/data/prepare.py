"""ALR samples -> `OUT/<split>.parquet` rows in the format verl 0.9.1's `RLHFDataset` reads.

One row::

    data_source   "soundmind/alr"
    prompt        [{"role": "user", "content": ...}]  ("<audio>" where the question audio goes)
    audios        [{"bytes": <16 kHz mono WAV>, "path": None}]      (audio modalities only)
    ability       "logical-reasoning"
    reward_model  {"style": "rule", "ground_truth": "entailed" | "not-entailed"}
    extra_info    {split, index, id, label, ref_answer_words, ref_final_answer, cot_consistent,
                   question_seconds, ref_answer_seconds}

Modalities: `text` (question text + instruction, no audio), `audio-text` (question audio, question
text, instruction) and `audio` (question audio + the fixed instruction only). The instruction is
`soundmind.prompt.ANSWER_INSTRUCTION`, the same constant the reward checks against.

`cot_consistent` is False where the reference reasoning's last line gives the other answer than the
label (33 of the 606 dev rows), or none (`ref_final_answer` is then None): the label is the ground
truth, and the flag lets evaluation and any supervised use of the reasoning leave those chains out.
The last line is read by `soundmind.reward.parse_answer`, the reward's own parser.

Audio representation: embedded bytes by default
-----------------------------------------------
verl 0.9.1 hands each `audios` entry unchanged to the chat message (`{"type": "audio", "audio":
entry}`) and from there to the HF processor and to vLLM, which both want a decoded waveform; a
parquet file cannot hold one compactly. So entries are *references* that
`soundmind.data.verl_dataset.AudioRLHFDataset` (set as verl's `data.custom_cls`) decodes to a 16 kHz
float32 array. By default the reference is the audio itself, a 16 kHz mono 16-bit WAV in `bytes`:
the parquet file is self-contained and works on any node, whatever is mounted where. `--audio-ref
path` stores the absolute path of the source file instead (small parquet, but every training pod
must see the data set at the same path; the decoder resamples on load).

Memory stays flat in the size of the data set: samples stream from the annotation file, and rows go
to the parquet writer one fixed-size row group at a time. Files are written under a temporary name
in OUT and renamed only when every requested split is complete, so a failed run leaves no parquet.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from soundmind import atomic
from soundmind.api.training import Modality
from soundmind.data import audio
from soundmind.data.layouts import Sample, detect_layout, iter_samples, present_splits
from soundmind.errors import DataError, OutputError
from soundmind.prompt import ANSWER_INSTRUCTION, label_to_answer
from soundmind.reward import parse_answer

DATA_SOURCE = "soundmind/alr"
ABILITY = "logical-reasoning"
AUDIO_PLACEHOLDER = "<audio>"
# verl splits prompt text on these when a row has media, so question text must not contain them.
_MEDIA_PLACEHOLDERS = ("<audio>", "<image>", "<video>")
MODALITY_METADATA = "soundmind.modality"  # parquet schema metadata key
DEFAULT_ROW_GROUP_ROWS = 32  # ~100 MB of embedded audio per group for 90 s questions
# A question audio outside this range is a broken file, not a question (ALR: 60-130 s; synth: ~20 s).
QUESTION_SECONDS = (1.0, 1800.0)


class AudioRef(enum.StrEnum):
    BYTES = "bytes"
    PATH = "path"


_AUDIO_ENTRY = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_EXTRA_INFO = pa.struct(
    [
        ("split", pa.string()),
        ("index", pa.int64()),
        ("id", pa.string()),
        ("label", pa.int64()),
        ("ref_answer_words", pa.int64()),
        ("ref_final_answer", pa.string()),
        ("cot_consistent", pa.bool_()),
        ("question_seconds", pa.float64()),
        ("ref_answer_seconds", pa.float64()),
    ]
)


def row_schema(modality: Modality) -> pa.Schema:
    fields = [
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", _EXTRA_INFO),
    ]
    if modality.has_audio:
        fields.insert(2, ("audios", pa.list_(_AUDIO_ENTRY)))
    return pa.schema(fields, metadata={MODALITY_METADATA: modality.value})


def prepared_modality(path: str | Path) -> Modality:
    """The modality a prepared split was written for: recorded in its schema's metadata, or (files
    from before it was recorded) read from its columns and first prompt."""
    schema = pq.read_schema(path)
    recorded = (schema.metadata or {}).get(MODALITY_METADATA.encode())
    if recorded:
        return Modality(recorded.decode())
    if "audios" not in schema.names:
        return Modality.TEXT
    first = next(pq.ParquetFile(path).iter_batches(batch_size=1, columns=["prompt"]), None)
    prompt = first.to_pylist()[0]["prompt"] if first is not None and first.num_rows else None
    audio_only = prompt_messages("", Modality.AUDIO)
    return Modality.AUDIO if prompt == audio_only else Modality.AUDIO_TEXT


def prompt_messages(question: str, modality: Modality) -> list[dict]:
    parts = {
        Modality.TEXT: [question, ANSWER_INSTRUCTION],
        Modality.AUDIO_TEXT: [AUDIO_PLACEHOLDER, question, ANSWER_INSTRUCTION],
        Modality.AUDIO: [AUDIO_PLACEHOLDER, ANSWER_INSTRUCTION],
    }[modality]
    return [{"role": "user", "content": "\n\n".join(parts)}]


def build_row(sample: Sample, index: int, modality: Modality, audio_ref: AudioRef = AudioRef.BYTES) -> dict:
    gold = label_to_answer(sample.label)
    final_answer = parse_answer(sample.answer)
    audios, question_seconds, answer_seconds = [], None, None
    if modality is Modality.AUDIO_TEXT:
        for marker in _MEDIA_PLACEHOLDERS:
            if marker in sample.question:
                raise _error(sample, f"question text contains {marker!r}, which verl reads as a media slot")
    if modality.has_audio:
        entry, question_seconds = _question_audio(sample, audio_ref)
        audios = [entry]
        answer_seconds = _duration(sample, sample.answer_audio)
    row = {
        "data_source": DATA_SOURCE,
        "prompt": prompt_messages(sample.question, modality),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": gold},
        "extra_info": {
            "split": sample.split,
            "index": index,
            "id": sample.id,
            "label": sample.label,
            "ref_answer_words": len(sample.answer.split()),
            "ref_final_answer": final_answer,
            "cot_consistent": final_answer == gold,
            "question_seconds": question_seconds,
            "ref_answer_seconds": answer_seconds,
        },
    }
    if modality.has_audio:
        row["audios"] = audios
    return row


def _error(sample: Sample, reason: str) -> DataError:
    return DataError(reason, split=sample.split, line=sample.line, sample_id=sample.id)


def _require_complete(sample: Sample, path: Path) -> None:
    if not path.is_file():
        raise _error(sample, f"audio file {path} does not exist")
    try:
        problem = audio.truncation(path)
    except OSError as exc:
        raise _error(sample, f"audio file {path} is unreadable: {exc.strerror or exc}") from None
    if problem:
        raise _error(sample, f"audio file {path} is incomplete: {problem}")


def _question_audio(sample: Sample, audio_ref: AudioRef) -> tuple[dict, float]:
    path = sample.question_audio
    if audio_ref is AudioRef.PATH:
        entry, seconds = {"bytes": None, "path": str(path.resolve())}, _duration(sample, path)
    else:
        _require_complete(sample, path)
        try:
            samples = audio.read_16k(path)
        except (RuntimeError, OSError, ValueError) as exc:  # libsndfile errors are RuntimeErrors
            raise _error(sample, f"audio file {path} is unreadable: {exc}") from None
        if samples.size == 0:
            raise _error(sample, f"audio file {path} has no samples")
        entry, seconds = {"bytes": audio.wav_bytes(samples), "path": None}, samples.size / audio.SAMPLE_RATE
    low, high = QUESTION_SECONDS
    if not low <= seconds <= high:
        raise _error(
            sample, f"audio file {path} lasts {seconds:.3f} s; a spoken question lasts {low:g} s to {high:g} s"
        )
    return entry, seconds


def _duration(sample: Sample, path: Path) -> float:
    _require_complete(sample, path)
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError) as exc:
        raise _error(sample, f"audio file {path} is unreadable: {exc}") from None
    if info.frames <= 0:
        raise _error(sample, f"audio file {path} has no samples")
    return info.frames / info.samplerate


@dataclass(frozen=True)
class SplitSummary:
    split: str
    path: Path
    rows: int
    cot_inconsistent: list[str]  # ids whose reference reasoning ends with the wrong answer


def prepare(
    data_dir: str | Path,
    out_dir: str | Path,
    modality: Modality | str,
    splits: Iterable[str] | None = None,
    audio_ref: AudioRef | str = AudioRef.BYTES,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    workers: int | None = None,
) -> list[SplitSummary]:
    """Write `out_dir/<split>.parquet` for each split (default: every split present)."""
    modality, audio_ref = Modality(modality), AudioRef(audio_ref)
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be at least 1, got {row_group_rows}")
    layout = detect_layout(data_dir)
    available = present_splits(data_dir, layout)
    splits = list(splits) if splits else available
    missing = [split for split in splits if split not in available]
    if missing:
        raise DataError(f"split(s) {missing} not found in {data_dir} ({layout.value} layout has {available})")

    out_dir = Path(out_dir)
    summaries = []
    with (
        atomic.staged_directory(out_dir) as staging,
        ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool,
    ):
        for split in splits:
            samples = iter_samples(data_dir, split, layout)
            try:
                rows, inconsistent = _write_split(
                    samples, staging / f"{split}.parquet", modality, audio_ref, row_group_rows, pool
                )
            except OSError as exc:  # reading input raises DataError; this is the output side
                raise OutputError(out_dir, exc) from None
            summaries.append(SplitSummary(split, out_dir / f"{split}.parquet", rows, inconsistent))
    return summaries


def _write_split(
    samples: Iterable[Sample],
    path: Path,
    modality: Modality,
    audio_ref: AudioRef,
    row_group_rows: int,
    pool: ThreadPoolExecutor,
) -> tuple[int, list[str]]:
    schema = row_schema(modality)
    count, inconsistent = 0, []
    samples = iter(samples)
    with pq.ParquetWriter(path, schema) as writer:
        while group := list(itertools.islice(samples, row_group_rows)):
            indices = range(count, count + len(group))
            rows = list(pool.map(lambda sample, index: build_row(sample, index, modality, audio_ref), group, indices))
            writer.write_table(pa.Table.from_pylist(rows, schema=schema), row_group_size=row_group_rows)
            inconsistent += [row["extra_info"]["id"] for row in rows if not row["extra_info"]["cot_consistent"]]
            count += len(group)
    return count, inconsistent
