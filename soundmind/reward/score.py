"""SoundMind-RL: the rule-based reward verl calls for every rollout.

    score = format + answer + length [+ audio_format + audio_length]

- format: `format_weight` when the response is `<think>...</think>` then `Answer: <label>` on its
  own last line, exactly as `soundmind.prompt.ANSWER_INSTRUCTION` asks; else 0.
- answer: `answer_weight` when the parsed answer equals the ground-truth label; else 0. The label
  comes from the data set, never from the reference reasoning (5% of those chains end with an
  answer that contradicts their own label).
- length: `length_weight * band(reasoning length, target)`, only when the format is right (there
  is no reasoning block to measure otherwise). `band` is 1 inside [0.5, 1.5] x target, rises
  linearly from 0 below it and falls linearly to 0 at 3 x target above it: it discourages both
  skipping the reasoning and rambling to the response limit. The target is the reference
  reasoning's length, `extra_info["ref_answer_words"]`, else `DEFAULT_TARGET_WORDS`. Length is
  measured in characters and converted with `CHARS_PER_WORD`, so it costs nothing per response
  (counting words is a second pass over the text, and ten times the cost of everything else).
- audio_format / audio_length: for rollouts that also produce speech, when `extra_info` carries
  `audio_output_seconds` (the duration of the generated speech): audio_format is
  `audio_format_weight` when there is any speech, audio_length is `audio_length_weight *
  band(seconds, extra_info["ref_audio_seconds"])` (no reference duration: no audio length
  reward). Both are 0.0 when no duration is given.

Weights default to the reference values and are overridden through verl's
`reward.custom_reward_function.reward_kwargs` (keyword arguments of `compute_score`).

How verl 0.9.1 consumes the returned dict (verl/experimental/reward_loop): `score` is the reward;
every key (including `score`) becomes a column `np.array([info[key] for info in batch])` keyed by
the first sample's keys. So every call returns the same keys with the same types: `audio_*` are
always present, and `pred` is a string, "" when no answer could be read. (None would survive
`np.array`, but validation's majority-vote metrics (`maj@N`) are skipped for any prompt whose
group holds a None `pred`; "" counts as its own vote.)
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Mapping
from typing import Any

from soundmind.prompt import ENTAILED, LABELS, NOT_ENTAILED, label_to_answer
from soundmind.reward.answer import read_response

DEFAULT_WEIGHTS: dict[str, float] = {
    "format_weight": 1.0,
    "answer_weight": 2.0,
    "length_weight": 1.0,
    "audio_format_weight": 0.5,
    "audio_length_weight": 0.75,
}
# Mean length of the ALR dev reference reasoning (839 words); the target when a row has no reference.
DEFAULT_TARGET_WORDS = 840
# Characters per whitespace-separated word in the ALR reference reasoning (dev: 6.24).
CHARS_PER_WORD = 6.24
BAND_LOW, BAND_HIGH, BAND_ZERO = 0.5, 1.5, 3.0  # band(), as multiples of the target

_LABEL_BY_NAME = {ENTAILED: ENTAILED, NOT_ENTAILED: NOT_ENTAILED, "0": LABELS[0], "1": LABELS[1]}


def band(value: float, target: float) -> float:
    """1 inside [BAND_LOW, BAND_HIGH] x target; linear from 0 at value 0 up to the band; linear from
    1 at the band's top down to 0 at BAND_ZERO x target; 0 beyond."""
    low, high, zero = BAND_LOW * target, BAND_HIGH * target, BAND_ZERO * target
    if value <= 0.0 or value >= zero:
        return 0.0
    if value < low:
        return value / low
    if value <= high:
        return 1.0
    return (zero - value) / (zero - high)


def normalize_label(ground_truth: Any) -> str:
    """The ground truth as `entailed`/`not-entailed`; accepts those strings or the ALR label 0/1."""
    if isinstance(ground_truth, str):
        label = _LABEL_BY_NAME.get(ground_truth.strip().lower())
        if label is not None:
            return label
    elif not isinstance(ground_truth, bool):
        try:
            return label_to_answer(operator.index(ground_truth))
        except (TypeError, ValueError):
            pass
    raise ValueError(f"ground_truth must be {ENTAILED!r}, {NOT_ENTAILED!r}, 0 or 1, got {ground_truth!r}")


def resolve_weights(overrides: Mapping[str, Any]) -> dict[str, float]:
    """DEFAULT_WEIGHTS with the weight overrides applied. Other keyword arguments (verl passes its
    own, e.g. `reward_router_address`) are ignored, except names that look like a misspelt weight:
    a silently ignored typo would train with the wrong reward."""
    weights = dict(DEFAULT_WEIGHTS)
    for name, value in overrides.items():
        if name not in weights:
            if "weight" in name or difflib.get_close_matches(name, DEFAULT_WEIGHTS, n=1, cutoff=0.8):
                raise ValueError(f"unknown reward weight {name!r}; valid: {', '.join(DEFAULT_WEIGHTS)}")
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"reward weight {name} must be a number >= 0, got {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"reward weight {name} must be a number >= 0, got {value!r}")
        weights[name] = number
    return weights


def _positive(extra_info: Mapping[str, Any], key: str) -> float | None:
    """extra_info[key] as a positive number; None when absent; an error when present but invalid."""
    value = extra_info.get(key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"extra_info[{key!r}] must be a number >= 0, got {value!r}")
    return number


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """SoundMind-RL reward of one response (verl's custom reward signature; see the module doc).

    Returns `score` (the sum of the parts) and its parts `format`, `answer`, `length`,
    `audio_format`, `audio_length` (weighted), plus `acc` (1.0/0.0), `pred` (the parsed answer,
    "" when none) and `format_ok`.
    """
    weights = resolve_weights(kwargs) if kwargs else DEFAULT_WEIGHTS
    gold = normalize_label(ground_truth)
    if not isinstance(solution_str, str):
        solution_str = "" if solution_str is None else str(solution_str)
    info: Mapping[str, Any] = extra_info if isinstance(extra_info, Mapping) else {}

    reading = read_response(solution_str)
    acc = 1.0 if reading.pred == gold else 0.0
    format_part = weights["format_weight"] if reading.format_ok else 0.0
    answer_part = weights["answer_weight"] * acc
    length_part = 0.0
    if reading.format_ok:
        target_words = _positive(info, "ref_answer_words") or DEFAULT_TARGET_WORDS
        length_part = weights["length_weight"] * band(reading.reasoning_chars / CHARS_PER_WORD, target_words)

    audio_format_part = audio_length_part = 0.0
    audio_seconds = _positive(info, "audio_output_seconds")
    if audio_seconds is not None and audio_seconds > 0:
        audio_format_part = weights["audio_format_weight"]
        ref_seconds = _positive(info, "ref_audio_seconds")
        if ref_seconds:
            audio_length_part = weights["audio_length_weight"] * band(audio_seconds, ref_seconds)

    return {
        "score": format_part + answer_part + length_part + audio_format_part + audio_length_part,
        "acc": acc,
        "pred": reading.pred or "",
        "format_ok": reading.format_ok,
        "format": format_part,
        "answer": answer_part,
        "length": length_part,
        "audio_format": audio_format_part,
        "audio_length": audio_length_part,
    }
