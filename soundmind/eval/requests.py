"""Prepared parquet rows (verl's RLHFDataset format) to OpenAI-compatible chat requests.

A row's `prompt` is a list of chat messages whose text may hold `<audio>` placeholders; its
`audios` list supplies one WAV per placeholder, in order, each as embedded bytes (raw, or `{"bytes": ...}`)
or a path (`{"path": ...}` or a plain string; relative paths are relative to the parquet file's
folder). Each placeholder becomes an `input_audio` content part with the WAV in base64, which is
how vLLM takes audio for Qwen2.5-Omni.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soundmind.reward.score import normalize_label

AUDIO_PLACEHOLDER = "<audio>"


@dataclass(frozen=True)
class EvalItem:
    index: int  # row number in the parquet file
    id: str
    gold: str  # entailed | not-entailed
    messages: list[dict[str, Any]]  # OpenAI chat messages, audio inlined


class RowError(ValueError):
    """A row that cannot be turned into a request; the message names the file, row and sample id."""


def _wav_bytes(entry: Any, base_dir: Path) -> bytes:
    if isinstance(entry, bytes | bytearray):
        data = bytes(entry)
    elif isinstance(entry, dict) and entry.get("bytes") is not None:
        data = bytes(entry["bytes"])
    else:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"an audio entry must be WAV bytes, a path, or a dict with 'bytes' or 'path'; got {entry!r:.80}"
            )
        resolved = Path(path) if Path(path).is_absolute() else base_dir / path
        try:
            data = resolved.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read audio {resolved}: {exc.strerror or exc}") from None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("audio is not a WAV file (no RIFF/WAVE header)")
    return data


def _content(text: str, audios: Iterator[Any], base_dir: Path) -> str | list[dict[str, Any]]:
    if AUDIO_PLACEHOLDER not in text:
        return text
    parts: list[dict[str, Any]] = []
    for position, segment in enumerate(text.split(AUDIO_PLACEHOLDER)):
        if position:
            entry = next(audios, None)
            if entry is None:
                raise ValueError(f"more {AUDIO_PLACEHOLDER} placeholders than entries in 'audios'")
            wav = base64.b64encode(_wav_bytes(entry, base_dir)).decode("ascii")
            parts.append({"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}})
        if segment.strip():
            parts.append({"type": "text", "text": segment})
    return parts


def to_item(row: dict[str, Any], index: int, source: Path) -> EvalItem:
    """One parquet row as an EvalItem; any problem is a RowError naming file, row and id."""
    extra = row.get("extra_info") or {}
    sample_id = str(extra.get("id", index))
    try:
        gold = normalize_label((row.get("reward_model") or {}).get("ground_truth"))
        prompt = row.get("prompt")
        if not isinstance(prompt, list | tuple) or not prompt:
            raise ValueError("'prompt' must be a non-empty list of chat messages")
        audios = iter(row.get("audios") or ())
        messages = [
            {"role": message["role"], "content": _content(message["content"], audios, source.parent)}
            for message in prompt
        ]
        if next(audios, None) is not None:
            raise ValueError(f"more entries in 'audios' than {AUDIO_PLACEHOLDER} placeholders")
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError(f"{source}: row {index} (id {sample_id}): {exc}") from None
    return EvalItem(index=index, id=sample_id, gold=gold, messages=messages)


def chat_request(item: EvalItem, model: str, max_tokens: int, temperature: float = 0.0) -> dict[str, Any]:
    """The `/v1/chat/completions` body for one item: what `soundmind eval` sends (and the autoscaling
    test's load generator, so its load is the same shape)."""
    return {"model": model, "messages": item.messages, "max_tokens": max_tokens, "temperature": temperature}


def read_items(source: Path, batch_rows: int = 64) -> Iterator[EvalItem]:
    """Streams EvalItems from a prepared parquet file, a batch of rows at a time."""
    import pyarrow.parquet as pq

    columns = ["prompt", "audios", "reward_model", "extra_info"]
    parquet = pq.ParquetFile(source)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    index = 0
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
        for row in batch.to_pylist():
            yield to_item(row, index, source)
            index += 1
