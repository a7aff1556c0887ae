"""`soundmind train` as a user meets it: exit codes and the dry-run output."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from soundmind.train import contract

POD_ENV = {contract.ENV_TRAINING_NAME: "alr-grpo", contract.ENV_NAMESPACE: "ml", contract.ENV_ATTEMPT: "3"}


def soundmind_train(tmp_path, spec: dict, *arguments: str) -> subprocess.CompletedProcess:
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(config)]
    command += ["--checkpoints-root", str(tmp_path / "ckpt"), *arguments]
    return subprocess.run(command, env={**os.environ, **POD_ENV}, capture_output=True, text=True, timeout=120)


def test_dry_run_prints_the_exact_environment_and_command(tmp_path, prepared):
    done = soundmind_train(tmp_path, {"dataset": {"path": str(prepared())}}, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"export VERL_FILE_LOGGER_PATH={tmp_path}/ckpt/alr-grpo/logs/attempt-3.jsonl" in done.stdout
    assert "-m verl.trainer.main_ppo \\\n    algorithm.adv_estimator=grpo" in done.stdout
    assert "'trainer.logger=[console,file]'" in done.stdout
    assert "actor_rollout_ref.model.external_lib=soundmind.models.qwen2_5_omni \\\n" in done.stdout
    assert (
        "'+actor_rollout_ref.model.override_config.architectures=[Qwen2_5OmniForConditionalGeneration]'" in done.stdout
    )
    last = f"{tmp_path}/ckpt/alr-grpo/global_step_20"  # 64 rows, 32 per step, 10 epochs: the last step is 20
    exported = f"{tmp_path}/ckpt/alr-grpo/export/global_step_20"
    assert (
        f"VERL_USE_EXTERNAL_MODULES=soundmind.models.qwen2_5_omni {sys.executable} -m verl.model_merger merge "
        f"--backend fsdp --local_dir {last}/actor --target_dir {exported}"
    ) in done.stdout
    assert not (tmp_path / "ckpt").exists()  # a dry run touches nothing


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"resources": {"gpusPerNode": 0}}, "resources.gpusPerNode"),
        ({"extraArgs": ["trainer.no_such_key=1"]}, "extraArgs[0]"),
        ({"algorithm": {"maxPromptLength": 1024}}, "algorithm.maxPromptLength"),
    ],
)
def test_invalid_configuration_exits_78_naming_the_field(tmp_path, prepared, spec, field):
    spec = {"dataset": {"path": str(prepared(question_seconds=60.0))}, **spec}
    done = soundmind_train(tmp_path, spec, "--dry-run")
    assert done.returncode == contract.EXIT_CONFIG_ERROR
    assert done.stderr.startswith(f"soundmind train: invalid configuration: {field}: ")
