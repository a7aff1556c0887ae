"""Model adapters that verl loads through its extension point (`actor_rollout_ref.model.external_lib`).

Importing an adapter module registers what verl 0.9.1 lacks for that model; nothing in verl is edited.
The adapter modules import transformers, torch and verl (the trainer image); this package itself
holds only what the command renderer needs, so rendering imports none of them.
"""

import importlib.util
from collections.abc import Mapping

QWEN2_5_OMNI_MODEL_TYPE = "qwen2_5_omni"
QWEN2_5_OMNI_ADAPTER = "soundmind.models.qwen2_5_omni"  # the module verl imports (external_lib)
# verl's override_config for Qwen2.5-Omni (actor_rollout_ref.model.override_config.*), applied to the
# Hugging Face config in memory; the checkpoint is never edited:
# - tie_word_embeddings: the Omni top-level config has none, and verl's engine reads it before loading
#   (False: the thinker has its own lm_head, and verl may then initialise on the meta device);
# - architectures: the hub names the layout `Qwen2_5OmniModel`, which verl's model merger cannot
#   resolve; `Qwen2_5OmniForConditionalGeneration` is the same layout under the name transformers,
#   the merger and vLLM all know, and the checkpoints verl writes carry it.
QWEN2_5_OMNI_OVERRIDE_CONFIG = {
    "tie_word_embeddings": False,
    "architectures": ["Qwen2_5OmniForConditionalGeneration"],
}

# The thinker's context (thinker_config.text_config.max_position_embeddings) of the published
# Qwen2.5-Omni checkpoints (Qwen/Qwen2.5-Omni-7B and -3B): what the command renders for a hub id,
# whose config.json the renderer cannot read before verl downloads the model.
QWEN2_5_OMNI_CONTEXT = 32768
FLASH_ATTENTION = "flash_attention_2"  # verl 0.9.1's choice when override_config names none
SDPA = "sdpa"  # torch's scaled-dot-product attention: in every torch build


def attention_implementation() -> str:
    """The attention transformers builds the policy with: FlashAttention 2 where the flash-attn
    package is installed (the trainer image has none), else SDPA. verl's packing keeps samples apart
    with both: the adapter's 4-row position ids separate them (tests/unit/models)."""
    return FLASH_ATTENTION if importlib.util.find_spec("flash_attn") is not None else SDPA


def thinker_context(config: Mapping) -> object:
    """`thinker_config.text_config.max_position_embeddings` of an Omni `config.json` (None when absent),
    which verl's rollout server looks for at the top level or under `text_config` only."""
    thinker = config.get("thinker_config")
    text = thinker.get("text_config") if isinstance(thinker, Mapping) else None
    return text.get("max_position_embeddings") if isinstance(text, Mapping) else None
