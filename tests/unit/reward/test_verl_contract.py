"""The reward as verl 0.9.1 itself loads and aggregates it (verl's own code, from PyPI)."""

from __future__ import annotations

import pytest

from soundmind.prompt import ENTAILED, NOT_ENTAILED

WELL_FORMED = "<think>x</think>\nAnswer: {}"


def test_verl_loads_the_rendered_reward_and_scores_a_rollout_with_the_rendered_weights():
    """The reward keys of the dry run's command (examples/training.yaml), composed as verl composes
    them, through verl's own loader (`get_custom_reward_fn`) and the reward manager verl's reward
    loop builds from the same config (`load_reward_manager`), scoring one rollout as that loop does."""
    import numpy as np
    import torch
    from verl import DataProto
    from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager

    from soundmind.reward import compute_score
    from soundmind.train.render import reward_module_path
    from tests.support import tiny_omni
    from tests.support.rendered import rendered_config

    config = rendered_config()
    rendered = config.reward.custom_reward_function
    assert rendered.path == reward_module_path()  # the installed file, loaded by path as in the pod
    loaded = get_custom_reward_fn(config)
    assert loaded.args[0].__code__ is compute_score.__code__  # verl's partial over the rendered function
    assert loaded.args[1] == {"format_weight": 1.0, "answer_weight": 2.0, "length_weight": 1.0}  # the example's

    tokenizer = tiny_omni.tokenizer()
    reasoning = "<think>Some runners are not poets, so the claim does not follow.</think>\n"
    prompt = tokenizer.encode("All poets are runners. Are all runners poets?")
    response = tokenizer.encode(f"{reasoning}Answer: {NOT_ENTAILED}")
    padding = [tokenizer.pad_token_id] * 8  # the rollout's response is padded to the response length
    rollout = DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt]),
            "responses": torch.tensor([response + padding]),
            "attention_mask": torch.tensor([[1] * (len(prompt) + len(response)) + [0] * len(padding)]),
        },
        non_tensors={  # the prepared row's columns (soundmind.data.prepare)
            "data_source": np.array(["soundmind/alr"], dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": NOT_ENTAILED}], dtype=object),
            "extra_info": np.array([{"id": "dev-0", "ref_answer_words": 10}], dtype=object),
        },
    )
    manager = load_reward_manager(config, tokenizer)
    assert type(manager).__name__ == "NaiveRewardManager"  # the rendered reward.reward_manager
    scored = manager.loop.run_until_complete(manager.run_single(rollout))
    info = scored["reward_extra_info"]
    assert scored["reward_score"] == info["score"] == 4.0  # format 1 + answer 2 + length 1, the example's weights
    assert (info["format"], info["answer"], info["length"], info["pred"]) == (1.0, 2.0, 1.0, NOT_ENTAILED)


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
