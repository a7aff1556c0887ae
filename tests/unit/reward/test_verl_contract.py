"""The reward as verl 0.9.1 itself loads and aggregates it (verl's own code, from PyPI)."""

from __future__ import annotations

import pytest

from soundmind.prompt import ENTAILED, NOT_ENTAILED

WELL_FORMED = "<think>x</think>\nAnswer: {}"


@pytest.fixture(scope="module")
def verl_reward():
    from verl.trainer.ppo import reward

    return reward


def test_verl_loads_compute_score_and_passes_reward_kwargs(verl_reward):
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": "pkg://soundmind.reward",
                    "name": "compute_score",
                    "reward_kwargs": {"answer_weight": 3.0, "length_weight": 0.0},
                }
            }
        }
    )
    score = verl_reward.get_custom_reward_fn(config)
    # verl's naive reward manager calls it with keywords and adds its own keys to extra_info.
    result = score(
        data_source="soundmind/alr",
        solution_str=WELL_FORMED.format(ENTAILED),
        ground_truth=ENTAILED,
        extra_info={"num_turns": None, "rollout_reward_scores": {}},
    )
    assert (result["score"], result["answer"], result["length"]) == (4.0, 3.0, 0.0)


def test_validation_metrics_keep_majority_vote_when_an_answer_is_unreadable():
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    from soundmind.reward import compute_score

    # Prompt "a": three right answers and one unreadable (majority right); prompt "b": four wrong.
    results = [compute_score("soundmind/alr", WELL_FORMED.format(ENTAILED), ENTAILED) for _ in range(3)]
    results += [compute_score("soundmind/alr", "no answer", ENTAILED)]
    results += [compute_score("soundmind/alr", WELL_FORMED.format(ENTAILED), NOT_ENTAILED) for _ in range(4)]
    infos = {key: [r[key] for r in results] for key in results[0]}

    def majority(preds: list) -> float:
        metrics = process_validation_metrics(["soundmind/alr"] * 8, ["a"] * 4 + ["b"] * 4, {**infos, "pred": preds})
        return metrics["soundmind/alr"]["acc"]["maj@4/mean"]

    assert infos["pred"][3] == ""
    assert majority(infos["pred"]) > 0.25  # both prompts vote (maj@N is bootstrapped: "a" scores ~0.9, "b" 0)
    # With None for "no answer", verl drops prompt "a" from maj@N: the metric would read 0.0.
    assert majority([p or None for p in infos["pred"]]) == pytest.approx(0.0)
