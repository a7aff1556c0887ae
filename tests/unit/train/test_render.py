"""Rendering the verl command, composed against verl 0.9.1's config (the copy soundmind ships, checked
against the installed wheel by test_verl_schema.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from soundmind.api.training import TrainingSpec
from soundmind.errors import ConfigError
from soundmind.train import contract
from soundmind.train.budget import AUDIO_TOKENS_PER_SECOND
from soundmind.train.config import PodIdentity, dump_spec, load_spec, parse_spec
from soundmind.train.dataset import locate
from soundmind.train.render import render
from soundmind.train.verl_config import compose, format_value

IDENTITY = PodIdentity(training_name="alr-grpo", namespace="ml", attempt=2, index=0, head_address="alr-grpo-0.alr")


def plan_and_config(spec: TrainingSpec, tmp_path: Path):
    plan = render(spec, IDENTITY, locate(spec.dataset.path, spec.dataset.modality), checkpoints_root=str(tmp_path))
    assert plan.command[1:3] == ["-m", "verl.trainer.main_ppo"]
    return plan, compose(plan.command[3:])


def test_one_node(prepared, tmp_path):
    data = prepared(rows=100)
    spec = TrainingSpec.model_validate({"dataset": {"path": str(data)}})
    plan, config = plan_and_config(spec, tmp_path)
    select = lambda key: OmegaConf.select(config, key)  # noqa: E731

    assert select("algorithm.adv_estimator") == "grpo"
    assert select("algorithm.use_kl_in_reward") is False
    assert select("actor_rollout_ref.actor.use_kl_loss") is True
    assert select("actor_rollout_ref.actor.kl_loss_type") == "low_var_kl"
    assert select("actor_rollout_ref.actor.kl_loss_coef") == 0.001
    assert select("actor_rollout_ref.actor.optim.lr") == 3.0e-7
    assert select("actor_rollout_ref.rollout.n") == 8
    assert select("actor_rollout_ref.model.path") == "Qwen/Qwen2.5-Omni-7B"
    assert select("trainer.nnodes") == 1 and select("trainer.n_gpus_per_node") == 8
    assert select("data.train_batch_size") == 32
    assert select("data.max_prompt_length") == 4096 and select("data.max_response_length") == 2048
    assert select("data.train_files") == str(data / "train.parquet")
    assert select("data.val_files") == str(data / "dev.parquet")
    assert select("data.audio_key") == "audios"
    assert select("data.custom_cls.name") == "AudioRLHFDataset"
    assert select("trainer.total_epochs") == 10
    checkpoint_dir = f"{tmp_path}/alr-grpo"
    assert plan.checkpoint_dir == checkpoint_dir == select("trainer.default_local_dir")
    assert select("trainer.save_freq") == 100 and select("trainer.max_actor_ckpt_to_keep") == 3
    assert select("trainer.resume_mode") == "auto"
    assert list(select("trainer.logger")) == ["console", "file"]
    assert select("trainer.experiment_name") == "ml.alr-grpo"
    assert plan.total_steps == 100 // 32 * 10  # verl drops the last partial batch
    assert plan.env["VERL_FILE_LOGGER_PATH"] == plan.log_path == f"{checkpoint_dir}/logs/attempt-2.jsonl"
    assert plan.env["RAY_ADDRESS"] == f"127.0.0.1:{contract.RAY_HEAD_PORT}"


def test_the_model_is_loaded_through_the_qwen2_5_omni_adapter(prepared, tmp_path):
    spec = TrainingSpec.model_validate({"dataset": {"path": str(prepared())}})
    _, config = plan_and_config(spec, tmp_path)
    model = config.actor_rollout_ref.model
    assert model.external_lib == "soundmind.models.qwen2_5_omni"
    assert importlib.util.find_spec(model.external_lib) is not None  # what verl imports
    assert OmegaConf.to_container(model.override_config) == {
        "tie_word_embeddings": False,
        "architectures": ["Qwen2_5OmniForConditionalGeneration"],
        # No flash-attn here (nor in the trainer image): torch's SDPA, never verl's FlashAttention 2 default.
        "attn_implementation": "sdpa",
        "max_position_embeddings": 32768,  # a hub id: the published Qwen2.5-Omni thinker context
    }


def test_the_attention_follows_what_is_installed_where_the_command_is_rendered(prepared, tmp_path, monkeypatch):
    from soundmind import models

    installed = {"flash_attn"}
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        models.importlib.util, "find_spec", lambda name: object() if name in installed else real_find_spec(name)
    )
    spec = TrainingSpec.model_validate({"dataset": {"path": str(prepared())}})
    _, config = plan_and_config(spec, tmp_path)
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "flash_attention_2"
    installed.clear()
    _, config = plan_and_config(spec, tmp_path)
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"


def omni_checkpoint(directory: Path, context: object) -> Path:
    """A config.json shaped like the hub's Qwen2.5-Omni one, with the thinker's context given."""
    directory.mkdir(parents=True)
    text_config = {} if context is None else {"max_position_embeddings": context}
    (directory / "config.json").write_text(
        json.dumps({"model_type": "qwen2_5_omni", "thinker_config": {"text_config": text_config}})
    )
    return directory


def test_the_rollout_context_is_the_checkpoints_thinker_context(prepared, tmp_path):
    model = omni_checkpoint(tmp_path / "models" / "omni", 8192)
    spec = TrainingSpec.model_validate({"model": str(model), "dataset": {"path": str(prepared())}})
    plan, config = plan_and_config(spec, tmp_path)
    assert config.actor_rollout_ref.model.override_config.max_position_embeddings == 8192
    assert "+actor_rollout_ref.model.override_config.max_position_embeddings=8192" in plan.command


@pytest.mark.parametrize("context", [None, "long", 0, True])
def test_a_checkpoint_without_a_usable_thinker_context_is_refused(prepared, tmp_path, context):
    model = omni_checkpoint(tmp_path / "models" / "omni", context)
    spec = TrainingSpec.model_validate({"model": str(model), "dataset": {"path": str(prepared())}})
    with pytest.raises(ConfigError) as refused:
        plan_and_config(spec, tmp_path)
    assert refused.value.field == "model"
    assert "thinker_config.text_config.max_position_embeddings" in str(refused.value)
    assert repr(context) in str(refused.value)


def test_a_prompt_and_response_longer_than_the_context_are_refused(prepared, tmp_path):
    model = omni_checkpoint(tmp_path / "models" / "omni", 6143)  # the example's 4096 + 2048 = 6144
    spec = TrainingSpec.model_validate({"model": str(model), "dataset": {"path": str(prepared())}})
    with pytest.raises(ConfigError) as refused:
        plan_and_config(spec, tmp_path)
    assert refused.value.field == "algorithm.maxResponseLength"
    assert "= 6144 tokens do not fit the 6143-token context" in str(refused.value)
    fitting = spec.model_copy(update={"algorithm": spec.algorithm.model_copy(update={"max_response_length": 2047})})
    plan_and_config(fitting, tmp_path)


def test_the_extra_args_cannot_change_the_context_the_model_decides(prepared, tmp_path):
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"path": str(prepared())},
            "extraArgs": ["actor_rollout_ref.model.override_config.max_position_embeddings=131072"],
        }
    )
    with pytest.raises(ConfigError, match=r"extraArgs\[0\].*spec.model decides"):
        plan_and_config(spec, tmp_path)


def test_validation_runs_in_batches_of_one_training_step(prepared, tmp_path):
    spec = TrainingSpec.model_validate(
        {"dataset": {"path": str(prepared())}, "algorithm": {"trainBatchSize": 16, "rolloutN": 4}}
    )
    _, config = plan_and_config(spec, tmp_path)
    assert config.data.val_batch_size == 64  # not null: verl would validate the whole dev split at once


def test_a_local_checkpoint_of_another_model_is_refused(prepared, tmp_path):
    model = tmp_path / "models" / "qwen2-audio"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "qwen2_audio"}')
    spec = TrainingSpec.model_validate({"model": str(model), "dataset": {"path": str(prepared())}})
    with pytest.raises(ConfigError) as refused:
        plan_and_config(spec, tmp_path)
    assert refused.value.field == "model"
    assert "'qwen2_audio' checkpoint" in str(refused.value) and "qwen2_5_omni" in str(refused.value)


def test_reward_is_the_installed_soundmind_function_with_the_spec_weights(prepared, tmp_path):
    spec = TrainingSpec.model_validate(
        {"dataset": {"path": str(prepared())}, "reward": {"formatWeight": 0.5, "answerWeight": 3.0}}
    )
    _, config = plan_and_config(spec, tmp_path)
    reward = config.reward.custom_reward_function
    assert OmegaConf.to_container(reward.reward_kwargs) == {
        "format_weight": 0.5,
        "answer_weight": 3.0,
        "length_weight": 1.0,
    }
    # verl's own loader on the composed config, as verl's reward loop calls it.
    from verl.trainer.ppo.reward import get_custom_reward_fn

    scored = get_custom_reward_fn(config)(
        data_source="soundmind/alr",
        solution_str="<think>premises</think>\nAnswer: entailed",
        ground_truth="entailed",
        extra_info={"ref_answer_words": 1},
    )
    assert (scored["acc"], scored["format"], scored["answer"]) == (1.0, 0.5, 3.0)


def test_four_nodes(prepared, tmp_path):
    spec = TrainingSpec.model_validate(
        {
            "dataset": {"path": str(prepared(rows=256))},
            "algorithm": {"rolloutN": 16, "trainBatchSize": 64},
            "resources": {"nodes": 4, "gpusPerNode": 8},
            "storage": {"checkpoints": {"saveEvery": 25, "keep": 5}},
        }
    )
    plan, config = plan_and_config(spec, tmp_path)
    assert config.trainer.nnodes == 4 and config.trainer.n_gpus_per_node == 8
    assert config.actor_rollout_ref.rollout.n == 16
    assert config.data.train_batch_size == 64 and config.actor_rollout_ref.actor.ppo_mini_batch_size == 64
    assert config.trainer.save_freq == 25 and config.trainer.test_freq == 25
    assert config.trainer.max_actor_ckpt_to_keep == 5
    assert plan.total_steps == 256 // 64 * 10


def test_text_modality_has_no_audio_settings(prepared, tmp_path):
    spec = TrainingSpec.model_validate({"dataset": {"path": str(prepared(modality="text")), "modality": "text"}})
    plan, config = plan_and_config(spec, tmp_path)
    assert not any(argument.startswith(("data.audio_key", "data.custom_cls")) for argument in plan.command)
    assert config.data.custom_cls.path is None


def test_extra_args_come_last_and_win(prepared, tmp_path):
    spec = TrainingSpec.model_validate(
        {"dataset": {"path": str(prepared())}, "extraArgs": ["trainer.val_before_train=false", "trainer.test_freq=5"]}
    )
    plan, config = plan_and_config(spec, tmp_path)
    assert plan.command[-2:] == ["trainer.val_before_train=false", "trainer.test_freq=5"]
    assert config.trainer.val_before_train is False and config.trainer.test_freq == 5


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (["trainer.save_frequency=10"], "extraArgs[0]", ["trainer.save_frequency", "no such key"]),
        (
            ["trainer.val_before_train=false", "trainer.test_freq=often"],
            "extraArgs[1]",
            ["trainer.test_freq", "Integer"],
        ),
        (["actor_rollout_ref.actor.use_kl_loss=maybe"], "extraArgs[0]", ["use_kl_loss", "bool"]),
        (["trainer.nnodes=2"], "extraArgs[0]", ["spec.resources.nodes"]),
        (["trainer.logger=[console]"], "extraArgs", ["'file'"]),
        (["trainer.test_freq"], "extraArgs[0]", ["Error parsing override"]),
    ],
)
def test_bad_extra_args_fail_at_render_time_naming_the_override(prepared, tmp_path, extra, field, words):
    spec = TrainingSpec.model_validate({"dataset": {"path": str(prepared())}, "extraArgs": extra})
    with pytest.raises(ConfigError) as raised:
        plan_and_config(spec, tmp_path)
    assert raised.value.field == field
    for word in words:
        assert word in str(raised.value)


def test_a_prompt_length_the_audio_cannot_fit_is_refused_with_the_numbers(prepared, tmp_path):
    data = prepared(question_seconds=200.0)  # 5000 audio tokens
    spec = TrainingSpec.model_validate({"dataset": {"path": str(data)}})
    with pytest.raises(ConfigError) as raised:
        plan_and_config(spec, tmp_path)
    error = raised.value
    assert error.field == "algorithm.maxPromptLength"
    assert "4096 tokens cannot hold" in str(error)
    assert f"200.0 s of audio × {AUDIO_TOKENS_PER_SECOND} tokens/s = 5000" in str(error)
    assert "train-63" in str(error)  # the sample at fault
    needed = int(str(error).rsplit("set at least ", 1)[1])
    fitting = TrainingSpec.model_validate({"dataset": {"path": str(data)}, "algorithm": {"maxPromptLength": needed}})
    plan_and_config(fitting, tmp_path)


def test_a_batch_larger_than_the_data_is_refused(prepared, tmp_path):
    spec = TrainingSpec.model_validate({"dataset": {"path": str(prepared(rows=16))}})
    with pytest.raises(ConfigError, match=r"algorithm.trainBatchSize: 32 is more than the 16 rows"):
        plan_and_config(spec, tmp_path)


def test_raw_layout_is_rendered_against_its_prepared_location(tmp_path):
    raw = tmp_path / "alr"
    raw.mkdir()
    for split in ("train", "dev"):
        (raw / f"{split}.jsonl").write_text("")
    spec = TrainingSpec.model_validate({"dataset": {"path": str(raw), "modality": "audio"}})
    plan, config = plan_and_config(spec, tmp_path)
    assert config.data.train_files == str(raw / "prepared" / "audio" / "train.parquet")
    assert plan.total_steps is None and "prepared from" in plan.notes[0]


def test_a_path_without_data_is_refused(tmp_path):
    spec = TrainingSpec.model_validate({"dataset": {"path": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"^dataset.path: .* neither prepared data"):
        plan_and_config(spec, tmp_path)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"resources": {"gpusPerNode": 0}}, "resources.gpusPerNode"),
        ({"algorithm": {"maxPromptLength": 100}}, "algorithm.maxPromptLength"),
        ({"dataset": {"modality": "video"}}, "dataset.modality"),
        ({"algorithm": {"rolloutNN": 8}}, "algorithm.rolloutNN"),
    ],
)
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(ConfigError) as raised:
        parse_spec(spec)
    assert raised.value.field == field


def test_the_configmap_format_round_trips(tmp_path):
    spec = TrainingSpec.model_validate({"resources": {"nodes": 2}, "extraArgs": ["trainer.test_freq=5"]})
    path = tmp_path / contract.CONFIG_FILE
    path.write_text(dump_spec(spec))
    assert load_spec(path) == spec


def test_trainer_role_allows_only_its_own_status():
    assert contract.trainer_role_rules("alr-grpo") == [
        {
            "apiGroups": ["soundmind.ai"],
            "resources": ["soundmindtrainings/status"],
            "resourceNames": ["alr-grpo"],
            "verbs": ["get", "patch"],
        }
    ]


_STRINGS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


def _hydra_reads(written: str) -> object:
    """What Hydra's own override parser (the one verl's main_ppo uses) makes of `key=<written>`."""
    return OverridesParser.create().parse_override(f"key={written}").value()


@given(_STRINGS.filter(lambda text: "\\" not in text))
def test_any_string_without_a_backslash_reaches_verl_unchanged(text):
    assert _hydra_reads(format_value(text)) == text


@given(_STRINGS)
def test_any_string_reaches_verl_unchanged_or_is_refused_loudly(text):
    try:
        written = format_value(text)
    except ValueError as refused:  # Hydra's quoting cannot hold some backslash sequences
        assert "\\" in text and "cannot be written as a Hydra override value" in str(refused)
    else:
        assert _hydra_reads(written) == text
