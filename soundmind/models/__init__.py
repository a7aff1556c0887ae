"""Model adapters that verl loads through its extension point (`actor_rollout_ref.model.external_lib`).

Importing an adapter module registers what verl 0.9.1 lacks for that model; nothing in verl is edited.
The adapter modules import transformers, torch and verl (the trainer image); this package itself
holds only what the command renderer needs, so rendering imports none of them.
"""

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
