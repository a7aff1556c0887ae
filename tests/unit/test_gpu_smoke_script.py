"""hack/gpu-smoke.sh, the one-command GPU check, up to the GPU: its --dry-run prints the commands it
would run, which must be the setup Job's own steps (examples/smoke/setup.yaml) and the training
pod's command on examples/smoke/training.yaml, with the volumes where a pod has them; and before
anything runs it refuses a host whose driver the CUDA 13 wheels cannot use, saying so."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from soundmind.api.training import TrainingSpec
from soundmind.train import contract, export
from soundmind.train.preflight import MIN_DRIVER_MAJOR
from tests.support import smoke

SCRIPT = smoke.ROOT / "hack" / "gpu-smoke.sh"
TRAINING = smoke.manifest("training.yaml")
NAME, SPEC = TRAINING["metadata"]["name"], TrainingSpec.model_validate(TRAINING["spec"])
TRAIN_STEP = [
    "train",
    "--config",
    contract.CONFIG_PATH,
    "--checkpoints-root",
    contract.CHECKPOINTS_MOUNT,
    "--no-status",
]


def gpu_smoke(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *arguments], capture_output=True, text=True, timeout=60, env=env or dict(os.environ)
    )


def commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def option_values(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == name]


def test_in_the_image_it_runs_the_setup_jobs_steps_then_the_training_pods_command(tmp_path):
    work = tmp_path / "work"
    done = gpu_smoke("--dry-run", "--work", str(work), "--image", "trainer:test", "--gpu", "1")
    assert done.returncode == 0, done.stderr
    assert not work.exists()  # a dry run makes nothing
    runs = commands(done.stdout)
    image_at = [argv.index("trainer:test") for argv in runs]
    assert [argv[at + 1 :] for argv, at in zip(runs, image_at, strict=True)] == [
        step[1:] for step in [*smoke.setup_steps(), ["soundmind", *TRAIN_STEP]]
    ]
    for argv in runs:
        assert argv[:3] == ["docker", "run", "--rm"] and option_values(argv, "--entrypoint") == ["soundmind"]
        assert option_values(argv, "--gpus") == ["device=1"]
        assert option_values(argv, "--shm-size") == [SPEC.resources.shm_size.removesuffix("i").lower()]
        assert f"{contract.ENV_TRAINING_NAME}={NAME}" in option_values(argv, "--env")
        assert sorted(option_values(argv, "--volume")) == sorted(
            [
                f"{work}/models:{contract.MODELS_MOUNT}",
                f"{work}/data:{contract.DATA_MOUNT}",
                f"{work}/checkpoints:{contract.CHECKPOINTS_MOUNT}",
                f"{smoke.SMOKE / 'training.yaml'}:{contract.CONFIG_PATH}:ro",
            ]
        )
    exported = export.export_dir(contract.checkpoint_dir(NAME, f"{work}/checkpoints"), 2)
    assert done.stdout.splitlines()[-1] == f"gpu-smoke: would check that {exported}/config.json exists"


def test_with_the_locked_wheels_it_runs_the_same_steps_on_directories_of_its_own(tmp_path):
    work = tmp_path / "work"
    done = gpu_smoke("--local", "--dry-run", "--work", str(work), env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    mounts = {contract.MODELS_MOUNT: work / "models", contract.DATA_MOUNT: work / "data"}
    config = work / "training.yaml"
    local_train = ["soundmind", *TRAIN_STEP]
    local_train[local_train.index(contract.CONFIG_PATH)] = str(config)
    local_train[local_train.index(contract.CHECKPOINTS_MOUNT)] = str(work / "checkpoints")
    expected = [[sys.executable, "-m", *smoke.relocated(step, mounts)] for step in [*smoke.setup_steps(), local_train]]
    assert commands(done.stdout) == expected

    # The training config it writes: the example's, with the model and data where the steps put them.
    lines = done.stdout.split(f"gpu-smoke: would write {config}:\n", 1)[1].splitlines()
    written = yaml.safe_load("\n".join(line[4:] for line in lines if line.startswith("    ")))
    wanted = {**TRAINING, "spec": {**TRAINING["spec"], "dataset": {**TRAINING["spec"]["dataset"]}}}
    wanted["spec"]["model"], wanted["spec"]["dataset"]["path"] = smoke.relocated(
        [SPEC.model, SPEC.dataset.path], mounts
    )
    assert written == wanted


def fake_nvidia_smi(directory: Path, driver: str) -> dict:
    directory.mkdir()
    tool = directory / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, {driver}, 81559 MiB'\n")
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{directory}:/usr/bin:/bin"}


def test_a_driver_too_old_for_cuda_13_is_refused_before_anything_runs(tmp_path):
    work = tmp_path / "work"
    done = gpu_smoke("--work", str(work), env=fake_nvidia_smi(tmp_path / "bin", "570.86.15"))
    assert done.returncode == 1
    too_old = "gpu-smoke: NVIDIA driver 570.86.15 on GPU 0; the CUDA 13 wheels need"
    assert done.stderr == f"{too_old} {MIN_DRIVER_MAJOR} or newer\n"
    assert not work.exists() and not done.stdout


def test_a_host_without_a_driver_is_told_so(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = gpu_smoke("--work", str(tmp_path / "work"), env={**os.environ, "PATH": f"{empty}:/usr/bin:/bin"})
    assert (done.returncode, done.stderr) == (1, "gpu-smoke: no nvidia-smi: this host has no NVIDIA driver installed\n")
