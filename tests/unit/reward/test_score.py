"""compute_score: parts, weights, the length band, and what verl needs of the returned dict."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from soundmind.prompt import ENTAILED, NOT_ENTAILED
from soundmind.reward import DEFAULT_WEIGHTS, compute_score
from soundmind.reward.score import CHARS_PER_WORD, band

KEYS = {"score", "acc", "pred", "format_ok", "format", "answer", "length", "audio_format", "audio_length"}


def respond(answer: str, words: int = 840) -> str:
    reasoning = "x" * round(words * CHARS_PER_WORD)
    return f"<think>{reasoning}</think>\nAnswer: {answer}"


def test_correct_well_formed_reference_length_answer_gets_every_text_part():
    result = compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, {"ref_answer_words": 840})
    assert result == {
        "score": 4.0,
        "acc": 1.0,
        "pred": ENTAILED,
        "format_ok": True,
        "format": 1.0,
        "answer": 2.0,
        "length": 1.0,
        "audio_format": 0.0,
        "audio_length": 0.0,
    }


@pytest.mark.parametrize("gold", [NOT_ENTAILED, 0, "0", " Not-Entailed ", np.int64(0)])
def test_ground_truth_forms(gold):
    assert compute_score("soundmind/alr", respond(NOT_ENTAILED), gold)["acc"] == 1.0
    assert compute_score("soundmind/alr", respond(ENTAILED), gold)["acc"] == 0.0


@pytest.mark.parametrize("gold", ["maybe", 2, None, 0.5, True])
def test_bad_ground_truth_is_an_error_naming_it(gold):
    with pytest.raises(ValueError, match="ground_truth must be"):
        compute_score("soundmind/alr", respond(ENTAILED), gold)


def test_unparseable_answer_is_an_empty_pred_and_no_answer_reward():
    result = compute_score("soundmind/alr", "<think>hmm</think>\nAnswer: no idea", ENTAILED)
    assert (result["pred"], result["acc"], result["answer"], result["format_ok"]) == ("", 0.0, 0.0, False)


def test_wrong_format_gets_no_format_and_no_length_reward():
    result = compute_score("soundmind/alr", "entailed", ENTAILED)
    assert (result["score"], result["format"], result["length"]) == (2.0, 0.0, 0.0)


def test_weights_override_as_verl_reward_kwargs_and_extra_kwargs_are_ignored():
    result = compute_score(
        "soundmind/alr",
        respond(ENTAILED),
        ENTAILED,
        None,
        format_weight=0.5,
        answer_weight="3",
        length_weight=0,
        reward_router_address=None,
        reward_model_tokenizer=None,
    )
    assert (result["format"], result["answer"], result["length"], result["score"]) == (0.5, 3.0, 0.0, 3.5)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"answer_weigth": 1.0}, "unknown reward weight 'answer_weigth'"),
        ({"lenght_weight": 1.0}, "unknown reward weight 'lenght_weight'"),
        ({"format_weight": -1}, "format_weight must be a number >= 0"),
        ({"length_weight": "lots"}, "length_weight must be a number >= 0"),
        ({"length_weight": math.inf}, "length_weight must be a number >= 0"),
    ],
)
def test_bad_weights_are_errors_naming_them(weights, message):
    with pytest.raises(ValueError, match=message):
        compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, **weights)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (25, 0.5), (50, 1.0), (100, 1.0), (150, 1.0), (225, 0.5), (300, 0.0), (1000, 0.0), (-5, 0.0)],
)
def test_band(value, expected):
    assert band(value, 100) == pytest.approx(expected)


@pytest.mark.parametrize(("words", "expected"), [(50, 0.5), (100, 1.0), (300, 1.0), (450, 0.5), (600, 0.0)])
def test_length_reward_follows_the_reference_length(words, expected):
    result = compute_score("soundmind/alr", respond(ENTAILED, words), ENTAILED, {"ref_answer_words": 200})
    assert result["length"] == pytest.approx(expected, abs=0.01)


def test_length_target_defaults_to_the_mean_reference_length():
    assert compute_score("soundmind/alr", respond(ENTAILED, 840), ENTAILED)["length"] == 1.0
    assert compute_score("soundmind/alr", respond(ENTAILED, 210), ENTAILED)["length"] == pytest.approx(0.5, abs=0.01)


def test_audio_output_parts():
    info = {"audio_output_seconds": 12.0, "ref_audio_seconds": 10.0}
    result = compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, info)
    assert (result["audio_format"], result["audio_length"]) == (0.5, 0.75)
    assert result["score"] == pytest.approx(4.0 + 1.25)
    no_speech = compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, {"audio_output_seconds": 0})
    assert (no_speech["audio_format"], no_speech["audio_length"]) == (0.0, 0.0)
    no_reference = compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, {"audio_output_seconds": 3})
    assert (no_reference["audio_format"], no_reference["audio_length"]) == (0.5, 0.0)


def test_bad_extra_info_value_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="extra_info\\['ref_answer_words'\\]"):
        compute_score("soundmind/alr", respond(ENTAILED), ENTAILED, {"ref_answer_words": "long"})


def test_returned_dicts_stack_into_verl_columns():
    # verl's reward loop takes the first sample's keys and builds np.array([info[key] ...]) per key.
    results = [
        compute_score("soundmind/alr", text, ENTAILED, info)
        for text, info in [
            (respond(ENTAILED), {"audio_output_seconds": 4.0, "ref_audio_seconds": 4.0}),
            ("no answer at all", None),
            (respond(NOT_ENTAILED), {"num_turns": None, "rollout_reward_scores": {}}),
        ]
    ]
    assert all(set(r) == KEYS for r in results)
    columns = {key: np.array([r[key] for r in results]) for key in results[0]}
    assert columns["pred"].dtype.kind == "U" and list(columns["pred"]) == [ENTAILED, "", NOT_ENTAILED]
    assert columns["format_ok"].dtype == bool
    for key in KEYS - {"pred", "format_ok"}:
        assert columns[key].dtype == np.float64, key


_TEXT = st.one_of(
    st.text(),
    st.builds(
        lambda reasoning, tail: f"<think>{reasoning}</think>\n{tail}",
        st.text(),
        st.sampled_from(["Answer: entailed", "Answer: not-entailed", "Answer: ", "entailed", ""]),
    ),
)


@given(
    _TEXT,
    st.sampled_from([ENTAILED, NOT_ENTAILED, 0, 1]),
    st.one_of(st.none(), st.fixed_dictionaries({"ref_answer_words": st.integers(1, 5000)})),
)
def test_score_never_crashes_and_stays_in_bounds(text, gold, extra_info):
    result = compute_score("soundmind/alr", text, gold, extra_info)
    assert set(result) == KEYS
    text_max = DEFAULT_WEIGHTS["format_weight"] + DEFAULT_WEIGHTS["answer_weight"] + DEFAULT_WEIGHTS["length_weight"]
    assert 0.0 <= result["score"] <= text_max
    parts = ("format", "answer", "length", "audio_format", "audio_length")
    assert result["score"] == pytest.approx(sum(result[p] for p in parts))
    assert result["acc"] in (0.0, 1.0)
    assert result["pred"] in (ENTAILED, NOT_ENTAILED, "")
