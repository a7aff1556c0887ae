"""Rollout rows built by verl 0.9.1's own agent-loop code, without Ray or an inference server.

`AgentLoopWorker` turns a rollout into training tensors with methods that need only the processor
and tokenizer it takes from its model config: `_pad_token_ids` (left-padded prompt, right-padded
response), `_compute_multi_modal_inputs` (the processor's audio features) and `_compute_position_ids`
(the rope index bound to the processor). The worker is created without its Ray-bound `__init__` and
given those three attributes; the prompt comes from the agent loop's Continuous Token builder for the
model type, as in `SingleTurnAgentLoop.run`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch


@dataclass
class RolloutRow:
    prompt_ids: list[int]  # as the agent loop sends them to the server (audio placeholders expanded)
    input_ids: torch.Tensor  # (1, prompt_length + response_length)
    attention_mask: torch.Tensor
    response_mask: torch.Tensor  # (1, response_length)
    position_ids: torch.Tensor  # (1, 4, length) with Omni's rope index, (1, length) without
    multi_modal_inputs: dict


class AgentLoop:
    def __init__(self, model_config, response_length: int):
        from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        self.worker = object.__new__(AgentLoopWorker)
        self.worker.processor = model_config.processor
        self.worker.tokenizer = model_config.tokenizer
        self.worker.mm_processor_kwargs = {}
        self.builder = create_continuous_token_builder(
            model_config.tokenizer, hf_model_type=model_config.hf_config.model_type, processor=model_config.processor
        )
        self.response_length = response_length

    def rows(self, samples: list[tuple[list[dict], list, list[int]]]) -> list[RolloutRow]:
        """(messages, audios, response ids) per sample; prompts are left-padded to the longest."""
        prompts = [self.builder.build_initial_tokens(messages, audios=audios) for messages, audios, _ in samples]
        prompt_length = max(len(prompt) for prompt in prompts)
        return [
            self._row(prompt, audios, response_ids, prompt_length)
            for prompt, (_, audios, response_ids) in zip(prompts, samples, strict=True)
        ]

    def _row(self, prompt_ids: list[int], audios: list, response_ids: list[int], prompt_length: int) -> RolloutRow:
        worker = self.worker
        prompt = worker._pad_token_ids(
            prompt_ids, max_length=prompt_length, padding_side="left", return_attention_mask=True
        )
        response = worker._pad_token_ids(
            response_ids, max_length=self.response_length, padding_side="right", return_attention_mask=True
        )
        input_ids = torch.cat([prompt["input_ids"], response["input_ids"]], dim=1)
        attention_mask = torch.cat([prompt["attention_mask"], response["attention_mask"]], dim=1)
        rollout = types.SimpleNamespace(multi_modal_data={"audios": audios}, mm_processor_kwargs=None)
        multi_modal_inputs = worker._compute_multi_modal_inputs(rollout, input_ids)
        position_ids = worker._compute_position_ids(input_ids, attention_mask, multi_modal_inputs)
        return RolloutRow(
            prompt_ids, input_ids, attention_mask, response["attention_mask"], position_ids, multi_modal_inputs
        )


def padded(rows: list[RolloutRow], name: str) -> torch.Tensor:
    return torch.cat([getattr(row, name) for row in rows])


def packed_micro_batch(rows: list[RolloutRow], position_ids: torch.Tensor | None = None):
    """The rows as verl's training engine receives them: left/right padding removed into nested
    tensors (`left_right_2_no_padding`), packed by the engine (`use_remove_padding`, verl's default)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    batch = tu.get_tensordict(
        {
            "input_ids": padded(rows, "input_ids"),
            "attention_mask": padded(rows, "attention_mask"),
            "response_mask": padded(rows, "response_mask"),
            "position_ids": padded(rows, "position_ids") if position_ids is None else position_ids,
            "multi_modal_inputs": [row.multi_modal_inputs for row in rows],
        },
        non_tensor_dict={"use_remove_padding": True, "temperature": 1.0},
    )
    return left_right_2_no_padding(batch)


# The tiny Omni's logits stay under 0.5, where bf16's steps are 2^-9 (about 0.002): ten steps allow for
# sums taken in another order by other kernels (on this CPU, packed and padded agree exactly), while
# packed samples that see each other are off by 0.27 (README, "Packed sequences").
BF16_TOLERANCE = 0.02


def unpacked_logits(module, rows: list[RolloutRow]) -> torch.Tensor:
    """The reference: the model on the padded batch with its attention mask, computing its own rope
    positions (what transformers does without verl), at the valid positions only."""
    from verl.utils.model import extract_multi_modal_inputs

    attention_mask = padded(rows, "attention_mask")
    logits = module(
        input_ids=padded(rows, "input_ids"),
        attention_mask=attention_mask,
        **extract_multi_modal_inputs([row.multi_modal_inputs for row in rows]),
        use_cache=False,
    ).logits
    return logits[attention_mask.bool()]


def packed_logits(engine, module, rows: list[RolloutRow], position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The logits of the rows packed into one sequence by the engine's `prepare_model_inputs`."""
    model_inputs, _ = engine.prepare_model_inputs(packed_micro_batch(rows, position_ids))
    return module(**model_inputs, use_cache=False).logits[0]


def packed_vs_unpacked(engine, sharded, rows: list[RolloutRow], position_ids: torch.Tensor | None = None):
    """|packed - unpacked| logits per valid token, computed as the run computes them: `sharded` is the
    module wrapped by the engine (`_build_fsdp_module`: FSDP with verl's mixed precision), under the
    autocast of the engine's `forward_step` at the dtype the engine resolved from its config."""
    assert engine._autocast_dtype != torch.float32  # verl skips the autocast at fp32; the run is not fp32
    with torch.no_grad(), torch.autocast("cpu", dtype=engine._autocast_dtype):
        packed = packed_logits(engine, sharded, rows, position_ids)
        reference = unpacked_logits(sharded, rows)
    assert packed.dtype == reference.dtype == engine._autocast_dtype
    assert packed.shape == reference.shape and packed.shape[0] == int(padded(rows, "attention_mask").sum())
    return (packed.float() - reference.float()).abs()
