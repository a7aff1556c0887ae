"""SoundMind's Qwen2.5-Omni adapter in verl 0.9.1's own code paths, on a tiny random Omni (CPU).

The model config is what verl builds from the rendered command (fixtures in tests/unit/conftest.py).
The module is loaded by verl's FSDP engine (`_build_module`: verl's auto-class choice,
`from_pretrained`, its `_verl_strip_modules` and its monkey patches) at the rendered `model_dtype`.
Packing is proven on the module as training runs it: wrapped by the engine (`_build_fsdp_module`, the
rendered FSDP1 with its mixed precision) under the autocast of the engine's `forward_step`, so at the
run's compute dtype (bf16). Rollout rows come from verl's
agent-loop code (tests/support/verl_rollout.py) and are packed by the engine's `prepare_model_inputs`,
as in training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.support import tiny_omni
from tests.support.verl_rollout import (
    BF16_TOLERANCE,
    AgentLoop,
    packed_logits,
    packed_micro_batch,
    packed_vs_unpacked,
    padded,
)

RESPONSE_LENGTH = 12
CLIP_SECONDS = (1.0, 2.2, 3.4)  # three prompts whose audio spans differ (25, 55 and 85 tokens)


@pytest.fixture(scope="module")
def module(omni_engine, rendered_actor):
    from verl.utils.torch_dtypes import PrecisionType

    module = omni_engine._build_module()
    assert {parameter.dtype for parameter in module.parameters()} == {
        PrecisionType.to_dtype(rendered_actor.engine.model_dtype)  # fp32 master weights, as the run keeps them
    }
    return module


@pytest.fixture(scope="module")
def sharded(omni_engine, rendered_actor, build_sharded_module):
    """The module as the run's forward computes: FSDP1 with verl's mixed precision at the dtype verl
    resolves from the rendered config (no `mixed_precision` set: bf16)."""
    module = build_sharded_module()
    assert rendered_actor.engine.mixed_precision is None and omni_engine._autocast_dtype == torch.bfloat16
    return module


@pytest.fixture(scope="module")
def rollouts(omni_model_config):
    rng = np.random.default_rng(tiny_omni.SEED)
    samples = []
    for seconds, response_tokens in zip(CLIP_SECONDS, (5, 12, 8), strict=True):
        clip = (0.1 * rng.standard_normal(int(seconds * 16_000))).astype(np.float32)
        messages = [{"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "Yes?"}]}]
        samples.append((messages, [clip], rng.integers(0, 250, response_tokens).tolist()))
    return AgentLoop(omni_model_config, RESPONSE_LENGTH).rows(samples)


def test_verl_loads_the_full_omni_layout_through_the_adapter(tiny_omni_dir, omni_model_config, omni_engine, module):
    from transformers import AutoModelForImageTextToText, Qwen2_5OmniProcessor
    from verl.utils.model import get_hf_auto_model_class

    from soundmind.models.qwen2_5_omni import Qwen2_5OmniForConditionalGeneration

    on_disk = json.loads((tiny_omni_dir / "config.json").read_text())
    assert on_disk["architectures"] == ["Qwen2_5OmniModel"] and "tie_word_embeddings" not in on_disk
    hf_config = omni_model_config.hf_config
    assert hf_config.model_type == "qwen2_5_omni"
    assert hf_config.tie_word_embeddings is False  # from override_config, read by the engine before loading
    assert get_hf_auto_model_class(hf_config) is AutoModelForImageTextToText

    assert type(module) is Qwen2_5OmniForConditionalGeneration
    assert [name for name, _ in module.named_children()] == ["thinker"]  # talker, token2wav stripped by verl
    from safetensors import safe_open

    with safe_open(tiny_omni_dir / "model.safetensors", "pt") as weights:
        thinker_weights = {name for name in weights.keys() if name.startswith("thinker.")}
        assert {name.split(".")[0] for name in weights.keys()} == {"thinker", "talker", "token2wav"}
    assert set(module.state_dict()) == thinker_weights  # vLLM's loader and verl's weight sync expect these
    assert module.get_input_embeddings() is module.thinker.model.embed_tokens

    processor = omni_model_config.processor
    assert isinstance(processor, Qwen2_5OmniProcessor)
    tokenizer = processor.tokenizer
    assert (
        processor.audio_token_id
        == tokenizer.convert_tokens_to_ids("<|AUDIO|>")
        == hf_config.thinker_config.audio_token_id
    )
    assert processor.image_token_id == tokenizer.convert_tokens_to_ids("<|IMAGE|>")
    assert processor.video_token_id == tokenizer.convert_tokens_to_ids("<|VIDEO|>")
    assert processor.spatial_merge_size == 2


def test_agent_loop_builds_omni_prompts_with_qwens_chat_builder(rollouts, omni_model_config):
    from verl.utils.tokenizer.continuous_token import QwenVLContinuousTokenBuilder

    from tests.support.verl_rollout import AgentLoop

    assert type(AgentLoop(omni_model_config, RESPONSE_LENGTH).builder) is QwenVLContinuousTokenBuilder
    audio_token_id = omni_model_config.processor.audio_token_id
    counts = [row.prompt_ids.count(audio_token_id) for row in rollouts]
    assert counts == [round(seconds * tiny_omni.AUDIO_TOKENS_PER_SECOND) for seconds in CLIP_SECONDS]
    for row in rollouts:
        assert set(row.multi_modal_inputs) == {"input_features", "feature_attention_mask"}
        assert tuple(row.position_ids.shape) == (1, 4, row.input_ids.shape[1])


def test_packed_logits_match_the_unpacked_model(omni_engine, sharded, rollouts):
    difference = packed_vs_unpacked(omni_engine, sharded, rollouts).max().item()
    print(f"packed vs unpacked at bf16, Omni's 4-row position ids: max abs difference {difference:.3g}")
    assert difference < BF16_TOLERANCE


def test_without_omni_position_ids_packed_samples_attend_to_each_other(omni_engine, sharded, rollouts):
    """What verl does when the processor has no rope index (no adapter): 1-D positions, which Omni's
    text model does not use to separate packed samples. The same comparison as above then fails."""
    from verl.utils.model import compute_position_id_with_mask

    one_row = compute_position_id_with_mask(padded(rollouts, "attention_mask"))
    difference = packed_vs_unpacked(omni_engine, sharded, rollouts, position_ids=one_row)
    first = int(rollouts[0].attention_mask.sum())
    print(f"packed vs unpacked at bf16, 1-D position ids: max abs difference {difference.max().item():.3g}")
    assert difference[:first].max() < BF16_TOLERANCE  # the first sample sees only itself either way
    assert difference[first:].max() > BF16_TOLERANCE


def test_backward_reaches_the_audio_encoder_with_finite_gradients(omni_engine, module, rollouts):
    module.zero_grad()
    logits = packed_logits(omni_engine, module, rollouts)
    log_probs = torch.log_softmax(logits[:-1], dim=-1)
    targets = omni_engine.prepare_model_inputs(packed_micro_batch(rollouts))[0]["input_ids"][0, 1:]
    (-log_probs.gather(-1, targets[:, None]).mean()).backward()
    parameters = dict(module.thinker.audio_tower.named_parameters())
    gradients = {name: parameter.grad for name, parameter in parameters.items() if parameter.grad is not None}
    # The only audio-encoder parameter Omni's forward never uses (its bos/eos embedding).
    assert set(parameters) - set(gradients) == {"audio_bos_eos_token.weight"}
    assert all(torch.isfinite(gradient).all() for gradient in gradients.values())
    assert gradients["conv1.weight"].abs().max() > 0 and gradients["proj.weight"].abs().max() > 0
    module.zero_grad()


def test_rollout_prompt_carries_the_processors_audio_token_count_in_vllm(tiny_omni_dir, omni_model_config, rollouts):
    """verl hands vLLM the agent loop's prompt ids; vLLM 0.24's own Omni-thinker processor expands one
    placeholder per audio item. After the adapter's collapse the result has exactly the processor's
    count; the expanded prompt as verl sends it would have 2N-1."""
    from verl.workers.rollout.vllm_rollout import vllm_async_server
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    vllm_processor = MULTIMODAL_REGISTRY.create_processor(
        ModelConfig(model=str(tiny_omni_dir), dtype="float32", max_model_len=1024, limit_mm_per_prompt={"audio": 1})
    )
    processor, row = omni_model_config.processor, rollouts[1]
    clip = np.zeros(int(CLIP_SECONDS[1] * 16_000), dtype=np.float32)
    features = processor.feature_extractor(clip, sampling_rate=16_000, return_attention_mask=True, padding="max_length")
    frames = int(features["attention_mask"].sum())
    expected = ((frames - 1) // 2 + 1 - 2) // 2 + 1  # Qwen2_5OmniProcessor's audio length formula
    assert row.prompt_ids.count(processor.audio_token_id) == expected

    def audio_tokens_in_vllm(prompt_ids: list[int]) -> int:
        mm_items = vllm_processor.info.parse_mm_data({"audio": [clip]})
        return vllm_processor(prompt_ids, mm_items)["prompt_token_ids"].count(processor.audio_token_id)

    # The dedup verl's vLLM server applies to every prompt, as the adapter left it.
    sent = vllm_async_server.qwen2_5_vl_dedup_image_tokens(row.prompt_ids, processor)
    assert sent.count(processor.audio_token_id) == 1
    assert audio_tokens_in_vllm(sent) == expected
    assert audio_tokens_in_vllm(row.prompt_ids) == 2 * expected - 1


def response_log_probs(omni_engine, module, rows) -> torch.Tensor:
    """Per response token log-probabilities, (rows, response length), from the packed forward as verl's
    engine computes them (logits against the input ids rolled by one)."""
    from verl.utils.torch_functional import logprobs_from_logits

    model_inputs, output_args = omni_engine.prepare_model_inputs(packed_micro_batch(rows))
    logits = module(**model_inputs, use_cache=False).logits[0]
    packed = logprobs_from_logits(logits, output_args["input_ids_rmpad_rolled"])
    result, start = torch.zeros(len(rows), RESPONSE_LENGTH_GRPO), 0
    for index, row in enumerate(rows):
        prompt, response = int(row.attention_mask.sum() - row.response_mask.sum()), int(row.response_mask.sum())
        result[index, :response] = packed[start + prompt - 1 : start + prompt + response - 1]
        start += prompt + response
    return result


RESPONSE_LENGTH_GRPO = 96


def test_one_grpo_step_with_the_soundmind_reward_moves_the_policy_toward_the_best_answer(
    omni_model_config, omni_engine, rendered_actor
):
    """verl's trainer cannot run on a machine without a GPU (its rollout is a vLLM/SGLang/TRT-LLM
    server and its FSDP engine calls CUDA), so this is its GRPO step done by hand with verl's own
    parts: a group of four rollouts for one spoken question (two sampled from the policy with
    transformers' generate, two written answers), SoundMind-RL as verl's custom reward, verl's GRPO
    advantage and vanilla PPO policy loss, the engine's packing, one optimizer step."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_policy_loss_fn
    from verl.workers.rollout.vllm_rollout import vllm_async_server

    from soundmind.prompt import ANSWER_INSTRUCTION
    from soundmind.reward import compute_score

    tokenizer = omni_model_config.tokenizer
    module = omni_engine._build_module()
    torch.manual_seed(tiny_omni.SEED)
    clip = (0.1 * np.random.default_rng(1).standard_normal(32_000)).astype(np.float32)
    messages = [
        {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": ANSWER_INSTRUCTION}]}
    ]
    loop = AgentLoop(omni_model_config, RESPONSE_LENGTH_GRPO)
    (prompt_row,) = loop.rows([(messages, [clip], [])])
    # What verl's vLLM server bans from sampling, as the adapter left it: a sampled audio placeholder
    # would have no audio features behind it.
    banned = vllm_async_server.get_vision_placeholder_token_ids(omni_model_config.processor)
    assert omni_model_config.processor.audio_token_id in banned
    with torch.no_grad():
        sampled = module.thinker.generate(
            input_ids=torch.tensor([prompt_row.prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_row.prompt_ids), dtype=torch.long),
            **prompt_row.multi_modal_inputs,
            do_sample=True,
            max_new_tokens=32,
            num_return_sequences=2,
            suppress_tokens=banned,
        )[:, len(prompt_row.prompt_ids) :].tolist()
    reasoning = "<think>Some runners are not poets, so the claim does not follow.</think>\n"
    written = [tokenizer.encode(f"{reasoning}Answer: {answer}") for answer in ("not-entailed", "entailed")]
    responses = [*written, *sampled]
    rows = loop.rows([(messages, [clip], response) for response in responses])

    scores = [
        compute_score(
            "soundmind/alr",
            tokenizer.decode(response, skip_special_tokens=True),
            "not-entailed",
            extra_info={"ref_answer_words": 10},
        )["score"]
        for response in responses
    ]
    assert scores == [4.0, 2.0, 0.0, 0.0]  # format + answer + length; format + length; nothing
    response_mask = padded(rows, "response_mask").float()
    token_level_rewards = torch.zeros_like(response_mask)
    token_level_rewards[torch.arange(len(rows)), response_mask.sum(-1).long() - 1] = torch.tensor(scores)
    advantages, _ = compute_grpo_outcome_advantage(token_level_rewards, response_mask, np.zeros(len(rows)))
    assert advantages[0, 0] > advantages[1, 0] > 0 > advantages[2, 0]

    with torch.no_grad():
        old_log_prob = response_log_probs(omni_engine, module, rows)
    actor = rendered_actor  # the run's loss mode, aggregation and clip ratios
    # A learning rate far above the run's (3e-7), so that one step moves the tiny model measurably.
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    loss, _ = get_policy_loss_fn(actor.policy_loss.loss_mode)(
        old_log_prob=old_log_prob,
        log_prob=response_log_probs(omni_engine, module, rows),
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=actor.loss_agg_mode,
        config=actor,
    )
    loss.backward()
    assert module.thinker.audio_tower.conv1.weight.grad.abs().max() > 0
    optimizer.step()

    with torch.no_grad():
        new_log_prob = response_log_probs(omni_engine, module, rows)
    change = ((new_log_prob - old_log_prob) * response_mask).sum(-1) / response_mask.sum(-1)
    print(f"GRPO step: rewards {scores}, mean log-prob change per response {[round(c, 3) for c in change.tolist()]}")
    assert change[0] > 0 and change[2] < 0 and change[3] < 0  # toward the rewarded answer, away from the rest
