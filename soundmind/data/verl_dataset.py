"""verl's `RLHFDataset`, taught to decode the audio references in prepared SoundMind rows.

verl 0.9.1 passes each `audios` entry unchanged into the chat message and, from there, to the HF
processor and to vLLM, both of which need a waveform. Prepared rows carry a WAV file (or a path to
one) instead, so this class decodes each entry to a float32 16 kHz array where verl extracts audio
from the messages; everything else is verl's own code. Select it with::

    data.custom_cls.path=pkg://soundmind.data.verl_dataset data.custom_cls.name=AudioRLHFDataset

The agent loop looks the class up through the same setting, so rollouts decode the same way.
Importing this module imports verl (and torch): it is for the trainer image.
"""

from __future__ import annotations

from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

from soundmind.data.audio import decode_entry


class AudioRLHFDataset(RLHFDataset):
    @classmethod
    def _extract_audio_info(cls, messages: list[dict]) -> list[Any] | None:
        audios = super()._extract_audio_info(messages)
        return None if audios is None else [decode_entry(entry) for entry in audios]
