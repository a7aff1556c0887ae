"""The export on success: verl 0.9.1's model merger on a checkpoint of the adapted Omni, checked with
vLLM 0.24's own architecture resolution and weight-name mapping.

The checkpoint is written the way verl's FSDP actor writes it: the module loaded by verl's engine,
sharded with FSDP2 (one CPU process, gloo), saved by verl's `FSDPCheckpointManager`. The merger runs
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
from soundmind.errors import ConfigError
from soundmind.train import export


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
def trained_checkpoint(tmp_path, omni_engine, omni_model_config):
    """A verl checkpoint at step 3 of the adapted model, its lm_head changed as training would."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from verl.trainer.config.config import CheckpointConfig
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    module = omni_engine._build_module()
    fully_shard(module, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
    with torch.no_grad():
        module.thinker.lm_head.weight.mul_(2.0)
    checkpoint_dir = tmp_path / "alr-grpo"
    manager = FSDPCheckpointManager(
        model=module,
        processing_class=omni_model_config.get_processor(),
        checkpoint_config=CheckpointConfig(save_contents=["model"], load_contents=["model"]),
    )
    manager.save_checkpoint(str(checkpoint_dir / "global_step_3" / "actor"), global_step=3)
    (checkpoint_dir / "latest_checkpointed_iteration.txt").write_text("3")  # as verl's trainer does after saving
    trained = {name: tensor.full_tensor().to(torch.bfloat16) for name, tensor in module.state_dict().items()}
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
