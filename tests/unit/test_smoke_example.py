"""examples/smoke, the first thing a user applies on a new GPU cluster: a setup Job, a 1 x 1 GPU
training of the tiny random Omni, a serving of what it exports, and a `soundmind eval` Job.

The manifests are checked against the spec models and against each other (the paths, claims and
names one step hands the next), every `soundmind` command in them against the real argument parser,
and then the setup Job's own commands run here and `soundmind train --dry-run` renders the smoke
training on what they made: 2 GRPO steps, on one GPU, every data check passed. The same commands run
in the trainer image on the real node in tests/gpu_images/test_smoke_on_real_node.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soundmind.api.base import GROUP
from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.cli import build_parser
from soundmind.serve.render import checked_arguments
from soundmind.train import contract, export
from soundmind.train.dataset import TRAIN_FILE, VAL_FILE
from soundmind.version import TRAINER_IMAGE
from soundmind_operator import pods
from soundmind_operator.serving import names as serving_names
from tests.support import smoke

TRAINING_MANIFEST = smoke.manifest("training.yaml")
SERVING_MANIFEST = smoke.manifest("serving.yaml")
SETUP, EVAL = smoke.manifest("setup.yaml"), smoke.manifest("eval.yaml")
SPEC = TrainingSpec.model_validate(TRAINING_MANIFEST["spec"])
SERVING_SPEC = ServingSpec.model_validate(SERVING_MANIFEST["spec"])
MOUNTS = {"models": contract.MODELS_MOUNT, "data": contract.DATA_MOUNT}


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def parsed(argv: list[str]):
    assert argv[0] == "soundmind", argv
    return build_parser().parse_args(argv[1:])


def test_the_custom_resources_are_valid_and_small():
    assert TRAINING_MANIFEST["apiVersion"] == SERVING_MANIFEST["apiVersion"] == f"{GROUP}/v1alpha1"
    assert (TRAINING_MANIFEST["kind"], SERVING_MANIFEST["kind"]) == (TRAINING.kind, SERVING.kind)
    assert (SPEC.resources.nodes, SPEC.resources.gpus_per_node, SPEC.total_gpus) == (1, 1, 1)
    assert SPEC.max_retries == 0 and SPEC.active_deadline_seconds
    assert SERVING_SPEC.from_training.name == TRAINING_MANIFEST["metadata"]["name"]
    assert not SERVING_SPEC.autoscaling.enabled and SERVING_SPEC.replicas == 1


@pytest.mark.parametrize("job", [SETUP, EVAL], ids=["setup", "eval"])
def test_the_jobs_run_soundmind_commands_in_the_trainer_image_as_the_operator_runs_its_pods(job):
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == pods.pod_security_context(contract.TRAINER_UID)
    for container in smoke.containers(job):
        assert container["image"] == TRAINER_IMAGE, container["name"]
        assert pods.container_security_context().items() <= container["securityContext"].items()
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        parsed(container["command"])  # exits (a failed test) on an option the command does not have
        assert "args" not in container  # the trainer image's entrypoint is `soundmind train`: command replaces it


def test_each_step_hands_the_next_what_it_reads():
    model_step, train_split, dev_split, prepare = smoke.setup_steps()
    assert model_step[1:3] == ["model", "tiny-omni"]
    assert option(model_step, "--out") == SPEC.model

    synth = [parsed(step) for step in (train_split, dev_split)]
    assert [(s.data_command, s.split) for s in synth] == [("synth", "train"), ("synth", "dev")]
    assert {s.out for s in synth} == {option(prepare, "--data-dir")}
    assert synth[0].seed != synth[1].seed  # the dev questions are not the training ones
    steps = synth[0].limit // SPEC.algorithm.train_batch_size * SPEC.algorithm.epochs
    assert steps == 2, "the smoke training is meant to run 2 GRPO steps"

    prepared = parsed(prepare)
    assert prepared.out == SPEC.dataset.path and prepared.modality == SPEC.dataset.modality.value

    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in SETUP["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}  # fmt: skip
    assert claims == {"models": SPEC.storage.models.claim_name, "data": SPEC.storage.data.claim_name}
    for container in smoke.containers(SETUP):
        mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert {name: mounted[name] for name in MOUNTS} == MOUNTS

    evaluation = parsed(smoke.containers(EVAL)[0]["command"])
    name = SERVING_MANIFEST["metadata"]["name"]
    assert evaluation.endpoint == f"http://{serving_names.service(name)}:{serving_names.HTTP_PORT}"
    assert evaluation.model == SERVING_SPEC.served_model_name
    assert str(evaluation.data) == f"{SPEC.dataset.path}/{VAL_FILE}"
    assert evaluation.max_tokens <= SPEC.algorithm.max_response_length


def test_the_serving_renders_a_command_vllm_accepts_for_the_export():
    from soundmind.models import tiny

    name = TRAINING_MANIFEST["metadata"]["name"]
    exported = export.export_dir(contract.checkpoint_dir(name), 2)
    arguments = checked_arguments(SERVING_SPEC, exported)
    assert arguments[0] == exported
    assert SERVING_SPEC.vllm.max_model_len <= tiny.MAX_POSITION_EMBEDDINGS
    assert SPEC.algorithm.max_prompt_length + SPEC.algorithm.max_response_length <= tiny.MAX_POSITION_EMBEDDINGS


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """The setup Job's steps, run here with its volumes as local directories."""
    root = tmp_path_factory.mktemp("smoke")
    mounts = {contract.MODELS_MOUNT: root / "models", contract.DATA_MOUNT: root / "data"}
    for step in smoke.setup_steps():
        argv = smoke.relocated(step, mounts)
        done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stderr}"
    return {**mounts, "root": root}


def test_the_setup_steps_make_the_model_and_the_data_the_training_reads(made):
    model = Path(smoke.relocated([SPEC.model], made)[0])
    assert json.loads((model / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    import pyarrow.parquet as pq

    data = Path(smoke.relocated([SPEC.dataset.path], made)[0])
    rows = {name: pq.ParquetFile(data / name).metadata.num_rows for name in (TRAIN_FILE, VAL_FILE)}
    assert rows == {TRAIN_FILE: 8, VAL_FILE: 4}


def test_the_smoke_training_renders_two_grpo_steps_on_one_gpu(made):
    manifest = json.loads(json.dumps(TRAINING_MANIFEST))
    manifest["spec"]["model"], manifest["spec"]["dataset"]["path"] = smoke.relocated(
        [SPEC.model, SPEC.dataset.path], made
    )
    config = made["root"] / "training.yaml"
    config.write_text(yaml.safe_dump(manifest))
    name = TRAINING_MANIFEST["metadata"]["name"]
    checkpoints = made["root"] / "checkpoints"
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(config), "--dry-run"]
    command += ["--checkpoints-root", str(checkpoints)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDMIND_")}
    env |= {contract.ENV_TRAINING_NAME: name, contract.ENV_NAMESPACE: "smoke"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cd "), done.stdout  # no note before the script: no check was skipped
    for override in (
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.n=2",
        "data.train_batch_size=4",
        f"actor_rollout_ref.model.path={manifest['spec']['model']}",
    ):
        assert f" {override} " in f" {done.stdout.replace(chr(10), ' ')} ", override
    assert f"{export.export_dir(contract.checkpoint_dir(name, str(checkpoints)), 2)}" in done.stdout


def test_every_smoke_prompt_fits_its_budget_as_verl_counts_it_with_the_tiny_omnis_processor(made, monkeypatch):
    """The renderer's check estimates text at 3 characters a token; the tiny Omni's byte-level tokenizer
    spends one a byte. verl's own dataset, with the made model's processor, counts every row's real
    prompt (audio tokens and text) and drops the ones over `maxPromptLength`: none may be dropped."""
    import datasets
    from omegaconf import OmegaConf
    from transformers import AutoProcessor

    from soundmind.data.verl_dataset import AudioRLHFDataset

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(made["root"] / "hf-datasets"))
    model, data = smoke.relocated([SPEC.model, SPEC.dataset.path], made)
    processor = AutoProcessor.from_pretrained(model)
    config = OmegaConf.create(
        {
            "max_prompt_length": SPEC.algorithm.max_prompt_length,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": None,  # in-process: no fork of this process's torch threads
            "cache_dir": str(made["root"] / "verl-cache"),
        }
    )
    for split, rows in ((TRAIN_FILE, 8), (VAL_FILE, 4)):
        dataset = AudioRLHFDataset(f"{data}/{split}", processor.tokenizer, config, processor=processor)
        assert len(dataset) == rows, f"{split}: verl dropped {rows - len(dataset)} rows over the prompt budget"
