"""Audio in and out of the prepared data: everything is 16 kHz mono (what Qwen2.5-Omni's audio encoder,
a Whisper feature extractor, is trained on), stored as 16-bit PCM WAV.

Resampling uses libsoxr (the `soxr` package, the resampler inside sox and librosa): band-limited,
fast, and one call for any pair of rates, so the same code converts espeak-ng's 22.05 kHz output and
whatever rate the published ALR recordings have.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000
# A data chunk size at or above this is a streaming writer's placeholder ("length unknown").
_UNKNOWN_LENGTH = 0x7FFF0000


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at 16 kHz from a (frames,) or (frames, channels) array at `rate`."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ")
    return samples


def read_16k(source: str | os.PathLike | bytes) -> np.ndarray:
    """A sound file (path or encoded bytes, any format libsndfile reads) as float32 mono 16 kHz.
    Raises soundfile.LibsndfileError / OSError for a missing or unreadable file."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    samples, rate = soundfile.read(source, dtype="float32", always_2d=False)
    return to_mono_16k(samples, rate)


def wav_bytes(samples: np.ndarray) -> bytes:
    """16 kHz mono float samples as a 16-bit PCM WAV file in memory."""
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def decode_entry(entry: Any) -> np.ndarray:
    """One `audios` entry of a prepared row as the float32 16 kHz waveform a processor takes.

    Entries are `{"bytes": <WAV>, "path": None}` (the default, self-contained) or
    `{"bytes": None, "path": "/abs/file.wav"}` (`prepare --audio-ref path`); a bare path or bytes
    value, and an already decoded array, are accepted too.
    """
    if isinstance(entry, dict):
        entry = entry.get("bytes") or entry.get("path")
    if isinstance(entry, np.ndarray):
        return entry.astype(np.float32, copy=False)
    if isinstance(entry, bytes | str | os.PathLike):
        return read_16k(entry)
    raise TypeError(f"audio entry must be a dict with bytes or path, bytes, a path or an array; got {entry!r:.80}")


def truncation(path: str | os.PathLike) -> str | None:
    """Why a WAV file holds fewer frames than its header promises (a copy cut short), or None.

    libsndfile silently reads what is there, so a file cut to 100 bytes reads as 0.002 s of audio;
    the header's data chunk size says how much there should be. Other formats: None (not checked).
    """
    with open(path, "rb") as file:
        header = file.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return None
        size = os.fstat(file.fileno()).st_size
        block_align = None
        while chunk := file.read(8):
            if len(chunk) < 8:
                return f"the WAV header is cut after {size} bytes"
            name, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = file.read(length + (length & 1))
                if len(fmt) >= 14:
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                continue
            if name == b"data":
                available = size - file.tell()
                if length >= _UNKNOWN_LENGTH or available >= length:
                    return None
                if not block_align:
                    return f"its data chunk promises {length} bytes, the file holds {available}"
                frames, present = length // block_align, available // block_align
                return f"its header promises {frames} frames, the file holds {present}: the file is cut short"
            file.seek(length + (length & 1), os.SEEK_CUR)
    return "the WAV file has no data chunk"
