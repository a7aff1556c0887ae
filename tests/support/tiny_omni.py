"""The tests' name for the tiny random Qwen2.5-Omni of `soundmind model tiny-omni`
(soundmind/models/tiny.py, the one source of truth)."""

from soundmind.models.tiny import SEED, SPECIAL_TOKENS, config, processor, tokenizer, write
from soundmind.train.budget import AUDIO_TOKENS_PER_SECOND

__all__ = ["AUDIO_TOKENS_PER_SECOND", "SEED", "SPECIAL_TOKENS", "config", "processor", "tokenizer", "write"]
