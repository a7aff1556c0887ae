"""`soundmind train` under bad input (issue 10): a strict spec, a modality that does not match the
prepared data, verl overrides Hydra rejects in any way, a raw layout without the training splits,
a non-UTF-8 file: all exit 78 naming the field. And a newcomer's dry run: a whole manifest, no
pod environment, no data volume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soundmind.api.training import TrainingSpec
from soundmind.errors import EXIT_CONFIG
from soundmind.train import contract

ROOT = Path(__file__).resolve().parents[3]
POD_ENV = {contract.ENV_TRAINING_NAME: "alr-grpo", contract.ENV_NAMESPACE: "ml"}


def train(tmp_path, config, *arguments, env=POD_ENV) -> subprocess.CompletedProcess:
    path = tmp_path / "training.yaml"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(path), "--dry-run"]
    command += ["--checkpoints-root", str(tmp_path / "ckpt"), *arguments]
    base = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDMIND_")}
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=120)


def refused(done: subprocess.CompletedProcess, field: str) -> str:
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert done.stderr.startswith(f"soundmind train: invalid configuration: {field}: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"algorithm": {"epochs": True}}, "algorithm.epochs", "valid integer (got True)"),
        ({"resources": {"nodes": "1"}}, "resources.nodes", "valid integer (got '1')"),
        ({"algorithm": {"rollout_n": 8}}, "algorithm.rollout_n", "Extra inputs are not permitted"),
        ({"max_retries": 3}, "max_retries", "Extra inputs are not permitted"),
        ({"suspend": "false"}, "suspend", "valid boolean"),
    ],
)
def test_the_spec_is_strict_as_the_crd_is(tmp_path, prepared, spec, field, words):
    assert words in refused(train(tmp_path, {"dataset": {"path": str(prepared())}, **spec}), field)


def test_every_spec_error_is_shown_not_only_the_first(tmp_path):
    spec = {"algorithm": {"epochs": True, "rolloutN": 0}, "resources": {"nodes": "1"}, "bogus": 1}
    err = refused(train(tmp_path, spec), "algorithm.rolloutN")
    for field in ("algorithm.epochs", "resources.nodes", "bogus"):
        assert f"\n  and {field}: " in err


def test_numbers_as_the_api_server_stores_them_are_accepted():
    """A `number` field may arrive as an integer from the API server (`klCoef: 0`); the operator
    validates the stored JSON with the same strict models."""
    spec = TrainingSpec.model_validate_json(
        '{"algorithm": {"klCoef": 0, "learningRate": 1}, "reward": {"formatWeight": 2}}'
    )
    assert (spec.algorithm.kl_coef, spec.reward.format_weight) == (0, 2)
    assert TrainingSpec.from_api(spec.to_api()) == spec


@pytest.mark.parametrize(("spec_modality", "data_modality"), [("text", "audio-text"), ("audio-text", "text")])
def test_a_modality_other_than_the_prepared_datas_is_refused_naming_both(
    tmp_path, prepared, spec_modality, data_modality
):
    spec = {"dataset": {"path": str(prepared(modality=data_modality)), "modality": spec_modality}}
    err = refused(train(tmp_path, spec), "dataset.modality")
    assert f"'{spec_modality}', but " in err and f"was prepared for '{data_modality}'" in err


@pytest.mark.parametrize(
    "extra",
    ["~trainer.logger", "~trainer", "trainer=1", "actor_rollout_ref=1", "trainer.logger=${trainer.nnodes}", "foo"],
)
def test_any_override_hydra_rejects_exits_78_not_1(tmp_path, prepared, extra):
    spec = {"dataset": {"path": str(prepared())}, "extraArgs": [extra]}
    done = train(tmp_path, spec)
    assert done.returncode == EXIT_CONFIG and "soundmind train: invalid configuration: extraArgs" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_raw_layout_without_the_train_split_is_refused_at_dry_run(tmp_path):
    raw = tmp_path / "alr"
    raw.mkdir()
    (raw / "dev.jsonl").write_text('{"id": "1"}\n')
    err = refused(train(tmp_path, {"dataset": {"path": str(raw)}}), "dataset.path")
    assert "has splits ['dev']; training needs ['train', 'dev'], missing ['train']" in err
    assert not (raw / "prepared").exists()


def test_a_spec_file_that_is_not_utf8_is_refused(tmp_path):
    assert "is not UTF-8 text (byte 0xff" in refused(train(tmp_path, b"model: \xff\n"), "--config")


def test_a_whole_manifest_is_accepted(tmp_path, prepared):
    manifest = yaml.safe_load((ROOT / "examples" / "training.yaml").read_text())
    manifest["spec"]["dataset"]["path"] = str(prepared())
    done = train(tmp_path, manifest)
    assert done.returncode == 0, done.stderr
    assert "-m verl.trainer.main_ppo" in done.stdout


def test_another_kind_of_manifest_is_refused(tmp_path):
    manifest = {"apiVersion": "soundmind.ai/v1alpha1", "kind": "SoundMindServing", "spec": {}}
    assert "holds a 'SoundMindServing'" in refused(train(tmp_path, manifest), "--config")


def test_a_dry_run_on_a_laptop_renders_what_it_can_and_says_what_it_skipped(tmp_path):
    manifest = yaml.safe_load((ROOT / "examples" / "training.yaml").read_text())  # dataset.path /data/alr
    done = train(tmp_path, manifest, env={})
    assert done.returncode == 0, done.stderr
    assert f"# {contract.ENV_TRAINING_NAME} is not set: paths and names use 'dry-run'" in done.stdout
    assert "# /data/alr is not on this machine; the prompt length and step count are checked when the pod starts" in (
        done.stdout
    )
    assert f"{tmp_path}/ckpt/dry-run/logs/attempt-1.jsonl" in done.stdout


def test_the_pod_itself_still_needs_its_name(tmp_path, prepared):
    done = train(tmp_path, {"dataset": {"path": str(prepared())}}, env={})
    assert done.returncode == 0  # a dry run
    path = tmp_path / "training.yaml"
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(path), "--no-status"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDMIND_")}
    real = subprocess.run(command, env=base, capture_output=True, text=True, timeout=120)
    assert real.returncode == EXIT_CONFIG and f"env {contract.ENV_TRAINING_NAME}" in real.stderr


def test_a_dev_shm_too_small_for_rays_object_store_is_refused(tmp_path, prepared):
    spec = {"dataset": {"path": str(prepared())}, "resources": {"shmSize": "100Mi"}}
    err = refused(train(tmp_path, spec), "resources.shmSize")
    assert "100Mi leaves Ray's object store 52428800 bytes (50% of /dev/shm)" in err and "at least 150Mi" in err
