"""Qwen2.5-Omni in verl 0.9.1: train the thinker of the full Omni checkpoint, roll out with vLLM.

verl imports this module in every process that builds its model config, because the training command
names it in `actor_rollout_ref.model.external_lib` (soundmind.train.render); the model merger imports it
through `VERL_USE_EXTERNAL_MODULES` (soundmind.train.export). Importing it:

- registers `Qwen2_5OmniForConditionalGeneration` below with transformers' `AutoModel` and
  `AutoModelForImageTextToText` for `Qwen2_5OmniConfig`, the auto classes verl's loader and merger pick
  for this config. It keeps the whole Omni module tree, so parameter names stay `thinker.…` (what
  vLLM's loader and verl's weight sync expect), routes forward and the input embeddings to the thinker,
  and names `talker` and `token2wav` in `_verl_strip_modules`, which verl's FSDP engine deletes after
  loading: they are neither trained nor synced;
- makes verl's `hf_processor` return a `Qwen2_5OmniProcessor` carrying what verl's helpers read from a
  processor (token ids, Omni's own `get_rope_index`, the merge size), instead of refusing it;
- registers `qwen2_5_omni` with the agent loop's prompt builders (Qwen's ChatML, multimodal);
- collapses expanded audio placeholders before a prompt reaches vLLM, as verl does for images, and
  keeps vLLM from sampling audio placeholders, as verl does for image and video ones.

What the engine reads before loading (`tie_word_embeddings`) and the architecture the merger
resolves are set through `override_config` in the rendered command
(`soundmind.models.QWEN2_5_OMNI_OVERRIDE_CONFIG`), never by editing the checkpoint.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    Qwen2_5OmniConfig,
    Qwen2_5OmniProcessor,
)
from transformers.models.qwen2_5_omni import modeling_qwen2_5_omni as omni
from verl.utils.tokenizer import continuous_token_wiring
from verl.workers.rollout import utils as rollout_utils

from soundmind.models import QWEN2_5_OMNI_MODEL_TYPE

STRIPPED_MODULES = ("talker", "token2wav")  # speech output: not trained, not synced to vLLM


class Qwen2_5OmniForConditionalGeneration(omni.Qwen2_5OmniForConditionalGeneration):  # noqa: N801 - see below
    """The full Omni model whose forward is the thinker's (text out): what verl trains.

    Named like transformers' class on purpose: `save_pretrained` writes the class name into
    `config.json`'s `architectures`, and vLLM maps exactly this name to its Omni thinker.
    """

    _verl_strip_modules = list(STRIPPED_MODULES)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers' Omni class insists on `spk_dict.pt` (the talker's voices); the thinker needs
        # none, and a model merged from a verl checkpoint carries none.
        return super(omni.Qwen2_5OmniForConditionalGeneration, cls).from_pretrained(*args, **kwargs)

    def forward(self, *args, **kwargs):
        return self.thinker(*args, **kwargs)

    def get_input_embeddings(self):
        return self.thinker.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.thinker.set_input_embeddings(value)


AutoModel.register(Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, exist_ok=True)


def prepare_processor(processor: Qwen2_5OmniProcessor, config: Qwen2_5OmniConfig) -> Qwen2_5OmniProcessor:
    """Give an Omni processor what verl reads from a processor.

    - `image_token_id`, `video_token_id`, `audio_token_id`: verl's placeholder handling;
    - `get_rope_index`: Omni's own, with verl's agent loop stacking it under 1-D text positions into the
      4-row position ids that make Omni's text model keep packed samples apart;
    - `get_rope_index_kwargs`: the audio lengths Omni's rope index needs (verl's per-model hook);
    - `spatial_merge_size`: the vision merge size the rope index reads.
    """
    thinker = config.thinker_config
    processor.image_token_id = thinker.image_token_id
    processor.video_token_id = thinker.video_token_id
    processor.audio_token_id = thinker.audio_token_id
    processor.spatial_merge_size = thinker.vision_config.spatial_merge_size
    # Omni's get_rope_index reads `self.config` (the thinker's token ids, seconds per chunk) and two
    # helpers of its model class; bind it to a small holder, not to the processor, whose own
    # `get_chunked_index` has another signature.
    rope = types.SimpleNamespace(config=thinker, spatial_merge_size=thinker.vision_config.spatial_merge_size)
    model_class = omni.Qwen2_5OmniPreTrainedModelForConditionalGeneration
    rope.get_llm_pos_ids_for_vision = types.MethodType(model_class.get_llm_pos_ids_for_vision, rope)
    rope.get_chunked_index = types.MethodType(model_class.get_chunked_index, rope)
    processor.get_rope_index = types.MethodType(model_class.get_rope_index, rope)
    processor.get_rope_index_kwargs = rope_index_kwargs
    return processor


def rope_index_kwargs(multi_modal_inputs: dict) -> dict:
    """The inputs of Omni's `get_rope_index` beyond verl's image and video grids."""
    kwargs = {}
    feature_attention_mask = multi_modal_inputs.get("feature_attention_mask")
    if feature_attention_mask is not None:
        kwargs["audio_seqlens"] = feature_attention_mask.sum(-1)
    if multi_modal_inputs.get("video_second_per_grid") is not None:
        kwargs["second_per_grids"] = multi_modal_inputs["video_second_per_grid"]
    return kwargs


def collapse_audio_placeholders(prompt_ids: list[int], audio_token_id: int) -> list[int]:
    """Each run of audio placeholders as one: vLLM 0.24 expands the single placeholder per audio item
    itself, and given an already expanded run it would add its own N tokens to it (2N-1)."""
    collapsed = []
    for token_id in prompt_ids:
        if token_id == audio_token_id and collapsed and collapsed[-1] == audio_token_id:
            continue
        collapsed.append(token_id)
    return collapsed


def _hf_processor(verl_hf_processor: Callable, name_or_path, **kwargs):
    """verl's `hf_processor`, which refuses Omni's processor, with Omni's prepared here."""
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    if config.model_type != QWEN2_5_OMNI_MODEL_TYPE:
        return verl_hf_processor(name_or_path, **kwargs)
    return prepare_processor(AutoProcessor.from_pretrained(name_or_path, **kwargs), config)


def _dedup_placeholders(verl_dedup: Callable, prompt_ids: list[int], processor) -> list[int]:
    """verl's image/video placeholder dedup before vLLM, extended to audio for Omni's processor."""
    prompt_ids = verl_dedup(prompt_ids, processor)
    if isinstance(processor, Qwen2_5OmniProcessor):
        prompt_ids = collapse_audio_placeholders(list(prompt_ids), processor.audio_token_id)
    return prompt_ids


def _banned_placeholders(verl_banned: Callable, processor) -> list[int]:
    """verl keeps the policy from sampling image/video placeholders; for Omni, audio ones too: the
    training forward fills every audio placeholder with audio features and fails ("Number of elements
    of source < number of ones in mask") on one with no audio behind it."""
    banned = verl_banned(processor)
    if isinstance(processor, Qwen2_5OmniProcessor):
        banned = [*banned, processor.audio_token_id]
    return banned


def _rebind(original: Callable, replacement: Callable) -> None:
    """Point every loaded verl module that holds `original` (defined there or imported by name) at
    `replacement`; modules imported later take it from the re-exporting packages updated here."""
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "verl" or module is None:
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, replacement)


def _install() -> None:
    from verl.utils.tokenizer import tokenizer as verl_tokenizer

    _rebind(verl_tokenizer.hf_processor, functools.partial(_hf_processor, verl_tokenizer.hf_processor))
    _rebind(
        rollout_utils.qwen2_5_vl_dedup_image_tokens,
        functools.partial(_dedup_placeholders, rollout_utils.qwen2_5_vl_dedup_image_tokens),
    )
    _rebind(
        rollout_utils.get_vision_placeholder_token_ids,
        functools.partial(_banned_placeholders, rollout_utils.get_vision_placeholder_token_ids),
    )
    family = continuous_token_wiring.ContinuousTokenModelFamily.QWEN25_VL
    continuous_token_wiring._MODEL_TYPE_TO_FAMILY[QWEN2_5_OMNI_MODEL_TYPE] = family


_install()

__all__ = [
    "STRIPPED_MODULES",
    "Qwen2_5OmniForConditionalGeneration",
    "collapse_audio_placeholders",
    "prepare_processor",
]
