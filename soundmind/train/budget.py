"""How many prompt tokens a prepared row needs, so `algorithm.maxPromptLength` is checked before any
GPU is allocated (verl's `data.truncation=error` would otherwise stop the run at the first long row).

Qwen2.5-Omni's audio encoder turns 16 kHz audio into 100 mel frames per second, halves them in its
convolution and again in its pooling layer: 25 tokens per second. Text is estimated at
CHARS_PER_TOKEN characters per token, below English's usual ~4, so the estimate errs long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

AUDIO_TOKENS_PER_SECOND = 25
CHARS_PER_TOKEN = 3.0
# The chat template around the user message (system prompt, role markers, audio begin/end tokens).
TEMPLATE_MARGIN_TOKENS = 128


@dataclass(frozen=True)
class PromptEstimate:
    sample_id: str
    audio_seconds: float
    text_chars: int

    @property
    def audio_tokens(self) -> int:
        return math.ceil(self.audio_seconds * AUDIO_TOKENS_PER_SECOND)

    @property
    def text_tokens(self) -> int:
        return math.ceil(self.text_chars / CHARS_PER_TOKEN)

    @property
    def tokens(self) -> int:
        return self.audio_tokens + self.text_tokens + TEMPLATE_MARGIN_TOKENS

    def explain(self) -> str:
        return (
            f"sample {self.sample_id!r}: {self.audio_seconds:.1f} s of audio × {AUDIO_TOKENS_PER_SECOND} tokens/s = "
            f"{self.audio_tokens} + {self.text_chars} characters of text ≈ {self.text_tokens} tokens + "
            f"{TEMPLATE_MARGIN_TOKENS} for the chat template = {self.tokens} tokens"
        )
