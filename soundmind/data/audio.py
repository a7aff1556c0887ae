"""Audio in and out of the prepared data: everything is 16 kHz mono (what Qwen2.5-Omni's audio encoder,
a Whisper feature extractor, is trained on), stored as 16-bit PCM WAV.

Resampling uses libsoxr (the `soxr` package, the resampler inside sox and librosa): band-limited,
fast, and one call for any pair of rates, so the same code converts espeak-ng's 22.05 kHz output and
whatever rate the published ALR recordings have.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16_000


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
