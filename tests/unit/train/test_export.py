"""The export on success: verl 0.9.1's model merger on a checkpoint of the adapted Omni, checked with
vLLM 0.24's own architecture resolution and weight-name mapping.

The checkpoint is written the way verl's FSDP actor writes it for the rendered command: the module
loaded and wrapped by verl's engine with the rendered `actor.strategy` (FSDP1; one CPU process,
gloo), its optimizer and learning-rate schedule built by the engine, saved by verl's
`FSDPCheckpointManager` as the engine builds it, with the rendered checkpoint contents. The merger runs
as the head runs it (`soundmind.train.export`), in a subprocess. vLLM cannot build the model on a
machine without a GPU (its attention layer asks the platform for a backend: "Invalid attention backend
for None"), so its acceptance is shown with what it decides from the files: the architecture it
resolves, where its Omni loader maps every exported weight name, and its own Omni-thinker processor
and chat template on one audio clip.

The training's `model` here is the tiny Omni with its processor files in the hub's layout
(`preprocessor_config.json`, `chat_template.json`, as Qwen/Qwen2.5-Omni-7B ships them), not the one
the installed transformers writes: the export must carry the source's own files, not the merger's.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
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


def test_a_merger_output_that_cannot_be_completed_fails_the_export_naming_it(tmp_path):
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    writes_no_config = (
        "import pathlib, sys; pathlib.Path(sys.argv[sys.argv.index('--target_dir') + 1]).mkdir(parents=True)"
    )
    with pytest.raises(export.ExportError) as failed:
        export.export_last_checkpoint(str(tmp_path), [sys.executable, "-c", writes_no_config], str(tmp_path), print)
    assert f"cannot complete the export {tmp_path}/export/global_step_2 for serving" in str(failed.value)
    assert "config.json" in str(failed.value)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, omni_engine, omni_model_config, rendered_actor, build_sharded_module):
    """A verl checkpoint at step 3 of the adapted model, its lm_head changed as training would."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager
    from verl.utils.fsdp_utils import fsdp_version

    module = build_sharded_module()
    assert (rendered_actor.strategy, fsdp_version(module)) == ("fsdp", 1)  # the rendered strategy: FSDP1
    with FullyShardedDataParallel.summon_full_params(module, writeback=True), torch.no_grad():
        module.thinker.lm_head.weight.mul_(2.0)
    optimizer = omni_engine._build_optimizer(module)
    checkpoint_dir = tmp_path_factory.mktemp("checkpoints") / "alr-grpo"
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


@pytest.fixture(scope="module")
def source_model(tiny_omni_dir, tmp_path_factory):
    """The tiny Omni with the hub's processor files: the feature extractor's and image processor's
    settings in one `preprocessor_config.json`, the chat template in `chat_template.json`."""
    source = tmp_path_factory.mktemp("models") / "tiny-omni"
    shutil.copytree(tiny_omni_dir, source)
    written = json.loads((source / "processor_config.json").read_text())
    flat = {**written["feature_extractor"], **written["image_processor"], "processor_class": written["processor_class"]}
    (source / "preprocessor_config.json").write_text(json.dumps(flat, indent=2))
    (source / "chat_template.json").write_text(
        json.dumps({"chat_template": (source / "chat_template.jinja").read_text()})
    )
    (source / "processor_config.json").unlink()
    (source / "chat_template.jinja").unlink()
    return source


@pytest.fixture(scope="module")
def exported(trained_checkpoint, source_model):
    """The head's export of that checkpoint, `source_model` being the training's `model`."""
    checkpoint_dir, _ = trained_checkpoint
    said = []
    merger = export.merger_program()
    status = export.export_last_checkpoint(str(checkpoint_dir), merger, str(source_model), said.append)
    return checkpoint_dir / "export" / "global_step_3", status, said


def test_the_exported_model_is_the_full_omni_layout_vllm_loads(exported, trained_checkpoint, tiny_omni_dir):
    from safetensors.torch import load_file
    from vllm.config import ModelConfig
    from vllm.model_executor.models.qwen2_5_omni_thinker import Qwen2_5OmniThinkerForConditionalGeneration
    from vllm.model_executor.models.registry import ModelRegistry

    _, trained = trained_checkpoint
    exported, status, said = exported
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


CLIP_SECONDS = 2.0  # 50 audio tokens (Omni: 25 per second)
QUESTION = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "Entailed or not?"}]}]


def test_the_export_is_complete_for_serving_with_the_source_models_own_files(exported, source_model):
    """The thinker only (audio output off: no talker weights, no voices), and the source's processor,
    tokenizer, chat template and generation files byte for byte, which transformers' AutoProcessor and
    vLLM's own Omni-thinker processor and chat template then read as they read the source."""
    from transformers import AutoConfig, AutoProcessor
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.renderers.hf import resolve_chat_template, safe_apply_chat_template

    exported, _, said = exported
    assert json.loads((exported / "config.json").read_text())["enable_audio_output"] is False
    assert AutoConfig.from_pretrained(exported).enable_audio_output is False
    assert json.loads((source_model / "config.json").read_text())["enable_audio_output"] is True
    assert not (exported / "spk_dict.pt").exists()
    from_source = {name for name in export.SERVING_FILES if (source_model / name).is_file()}
    assert {"preprocessor_config.json", "chat_template.json", "tokenizer.json", "generation_config.json"} <= from_source
    assert {name for name in export.SERVING_FILES if (exported / name).is_file()} == from_source
    assert all((exported / name).read_bytes() == (source_model / name).read_bytes() for name in from_source)
    assert said[-1] == f"copied from {source_model}: {', '.join(sorted(from_source))}"

    # transformers: the export's processor renders the question and one clip as the source's does.
    clip = np.random.default_rng(0).uniform(-0.1, 0.1, int(CLIP_SECONDS * 16_000)).astype(np.float32)
    processed = {}
    for name, directory in (("source", source_model), ("export", exported)):
        processor = AutoProcessor.from_pretrained(directory)
        prompt = processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
        processed[name] = processor(text=prompt, audio=[clip], return_tensors="pt")
    audio_token_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    assert processed["export"]["input_ids"][0].tolist().count(audio_token_id) == CLIP_SECONDS * 25
    assert processed["export"].keys() == processed["source"].keys()
    assert all(torch.equal(processed["export"][key], processed["source"][key]) for key in processed["source"])

    # vLLM: the config it serves from says text out; its processor expands the clip's one placeholder
    # in the prompt its chat template renders to the same 50 tokens.
    model_config = ModelConfig(
        model=str(exported), dtype="bfloat16", max_model_len=1024, limit_mm_per_prompt={"audio": 1}
    )
    assert model_config.hf_config.enable_audio_output is False
    vllm_processor = MULTIMODAL_REGISTRY.create_processor(model_config)
    tokenizer = vllm_processor.info.get_tokenizer()
    template = json.loads((source_model / "chat_template.json").read_text())["chat_template"]
    assert resolve_chat_template(tokenizer, None, None, model_config=model_config) == template
    prompt_ids = safe_apply_chat_template(model_config, tokenizer, QUESTION, add_generation_prompt=True)
    result = vllm_processor(prompt_ids, vllm_processor.info.parse_mm_data({"audio": [clip]}))
    assert result["prompt_token_ids"] == processed["export"]["input_ids"][0].tolist()
