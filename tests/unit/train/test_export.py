"""The export on success: verl 0.9.1's model merger on a checkpoint of the adapted Omni, checked with
vLLM 0.24's own architecture resolution and weight-name mapping.

The checkpoint is written the way verl's FSDP actor writes it for the rendered command: the module
loaded and wrapped by verl's engine with the rendered `actor.strategy` (FSDP1; one CPU process,
gloo), its optimizer and learning-rate schedule built by the engine, saved by verl's
`FSDPCheckpointManager` as the engine builds it, with the rendered checkpoint contents. The merger runs
as the head runs it (`soundmind.train.export`), in a subprocess. vLLM cannot build the model on a
machine without a GPU (its attention layer asks the platform for a backend: "Invalid attention backend
for None"), so its acceptance is shown with what it decides from the files: the architecture it
resolves, and where its Omni loader maps every exported weight name.
"""

from __future__ import annotations

import json

import pytest
import torch

from soundmind.api.training import ModelStatus
from soundmind.train import export
from soundmind.train.errors import ConfigError


def test_the_merger_arguments_pass_verls_own_parser():
    parsed = export.check_merge_arguments(export.merge_arguments("/checkpoints/alr-grpo", 40))
    assert (parsed.operation, parsed.backend) == ("merge", "fsdp")
    assert parsed.local_dir == "/checkpoints/alr-grpo/global_step_40/actor"
    assert parsed.target_dir == "/checkpoints/alr-grpo/export/global_step_40"


def test_an_argument_verl_does_not_know_is_refused_with_argparses_message():
    with pytest.raises(ConfigError) as refused:
        export.check_merge_arguments([*export.merge_arguments("/checkpoints/x", 1), "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in str(refused.value)


@pytest.fixture
def trained_checkpoint(tmp_path, omni_engine, omni_model_config, rendered_actor, build_sharded_module):
    """A verl checkpoint at step 3 of the adapted model, its lm_head changed as training would."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager
    from verl.utils.fsdp_utils import fsdp_version

    module = build_sharded_module()
    assert (rendered_actor.strategy, fsdp_version(module)) == ("fsdp", 1)  # the rendered strategy: FSDP1
    with FullyShardedDataParallel.summon_full_params(module, writeback=True), torch.no_grad():
        module.thinker.lm_head.weight.mul_(2.0)
    optimizer = omni_engine._build_optimizer(module)
    checkpoint_dir = tmp_path / "alr-grpo"
    # As the engine's `initialize` builds it; its `save_checkpoint` adds only moves to and from the GPU.
    manager = FSDPCheckpointManager(
        model=module,
        optimizer=optimizer,
        lr_scheduler=omni_engine._build_lr_scheduler(optimizer),
        processing_class=omni_model_config.get_processor(),
        checkpoint_config=rendered_actor.checkpoint,
        trust_remote_code=omni_model_config.trust_remote_code,
    )
    assert list(rendered_actor.checkpoint.save_contents) == ["model", "optimizer", "extra"]
    actor_dir = checkpoint_dir / "global_step_3" / "actor"
    manager.save_checkpoint(str(actor_dir), global_step=3)
    written = {path.name for path in actor_dir.iterdir()}
    assert {
        "model_world_size_1_rank_0.pt",
        "optim_world_size_1_rank_0.pt",
        "extra_state_world_size_1_rank_0.pt",
    } <= written
    (checkpoint_dir / "latest_checkpointed_iteration.txt").write_text("3")  # as verl's trainer does after saving
    # The engine set FSDP1's full state dict for one process: the trained weights under their HF names.
    trained = {name: tensor.to(torch.bfloat16) for name, tensor in module.state_dict().items()}
    return checkpoint_dir, trained


def test_the_exported_model_is_the_full_omni_layout_vllm_loads(trained_checkpoint, tiny_omni_dir):
    from safetensors.torch import load_file
    from vllm.config import ModelConfig
    from vllm.model_executor.models.qwen2_5_omni_thinker import Qwen2_5OmniThinkerForConditionalGeneration
    from vllm.model_executor.models.registry import ModelRegistry

    checkpoint_dir, trained = trained_checkpoint
    said = []
    status = export.export_last_checkpoint(str(checkpoint_dir), export.merger_program(), said.append)

    exported = checkpoint_dir / "export" / "global_step_3"
    assert status == ModelStatus(path=str(exported), step=3)
    assert "VERL_USE_EXTERNAL_MODULES=soundmind.models.qwen2_5_omni" in said[0]
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni"
    assert config["architectures"] == ["Qwen2_5OmniForConditionalGeneration"]
    assert {"thinker_config", "talker_config", "token2wav_config"} <= set(config)  # the full Omni config

    weights = load_file(exported / "model.safetensors")
    base = load_file(tiny_omni_dir / "model.safetensors")
    assert set(weights) == {name for name in base if name.startswith("thinker.")} == set(trained)
    assert all(weights[name].shape == base[name].shape for name in weights)
    assert all(torch.equal(weights[name], trained[name]) for name in weights)  # the trained values, in bf16
    assert not torch.equal(weights["thinker.lm_head.weight"], base["thinker.lm_head.weight"].to(torch.bfloat16))

    # vLLM: the export resolves to the same Omni thinker as the hub layout, and its loader maps every
    # exported weight onto that model's towers and language model (nothing dropped, nothing skipped).
    vllm_config = ModelConfig(model=str(exported), dtype="bfloat16", max_model_len=1024)
    base_config = ModelConfig(model=str(tiny_omni_dir), dtype="bfloat16", max_model_len=1024)
    model_class, _ = ModelRegistry.resolve_model_cls(vllm_config.architectures, vllm_config)
    assert model_class is ModelRegistry.resolve_model_cls(base_config.architectures, base_config)[0]
    assert model_class is Qwen2_5OmniThinkerForConditionalGeneration
    mapped = model_class.hf_to_vllm_mapper.apply_list(sorted(weights))
    assert len(mapped) == len(weights)
    assert {name.split(".")[0] for name in mapped} == {"audio_tower", "visual", "language_model"}
    assert "language_model.lm_head.weight" in mapped and "language_model.model.embed_tokens.weight" in mapped

    # transformers loads it as the full Omni model through the adapter (a training may start from it:
    # the export has no talker voices, which the adapter does not need).
    from soundmind.models.qwen2_5_omni import Qwen2_5OmniForConditionalGeneration

    reloaded = Qwen2_5OmniForConditionalGeneration.from_pretrained(exported, dtype=torch.bfloat16)
    assert torch.equal(reloaded.thinker.lm_head.weight, trained["thinker.lm_head.weight"])
