"""The preflight of a training pod, run as the pod runs it: `soundmind train` as a real process, with a
fake NVML (`tests/support/nvml.py`) first on PYTHONPATH in place of the node's driver, a fake `ray`
first on PATH that records whether Ray was started, and this machine's real /dev/shm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from soundmind.api.training import TrainingSpec
from soundmind.errors import PreflightError
from soundmind.train import contract, preflight
from tests.support import nvml
from tests.support.prerequisite import missing
from tests.unit.train import test_roles
from tests.unit.train.test_roles import NODE, ray_calls, train

fake_ray = test_roles.fake_ray  # the fixture: a fake `ray` first on PATH

NEEDED = "580 or newer is needed (the trainer image's CUDA 13 wheels)"
TWO_NODES = {"resources": {"nodes": 2, "gpusPerNode": 8, "shmSize": "1Gi"}}


def shm_here() -> str:
    stat = os.statvfs(contract.SHM_MOUNT)
    return preflight.size_text(stat.f_blocks * stat.f_frsize)


def last_line(text: str) -> str:
    """What the pod's termination message ends with (FallbackToLogsOnError: the log's tail)."""
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("spec", "driver", "says"),
    [
        pytest.param(
            TWO_NODES, {"driver": "550.54.15"}, f"NVIDIA driver 550.54.15 found, {NEEDED}", id="driver-too-old"
        ),
        pytest.param(
            TWO_NODES,
            {"error": nvml.NO_LIBRARY},
            f"no NVIDIA driver found (NVML: {nvml.NO_LIBRARY}); {NEEDED}",
            id="no-driver",
        ),
        pytest.param(TWO_NODES, {"gpus": 4}, "4 GPU(s) visible, resources.gpusPerNode is 8", id="too-few-gpus"),
        pytest.param(
            {"resources": {"nodes": 2, "gpusPerNode": 8, "shmSize": "1Pi"}},
            {},
            f"/dev/shm is {shm_here()}, resources.shmSize is 1Pi "
            "(the kubelet sizes it at the smaller of shmSize and resources.memory)",
            id="small-shm",
        ),
    ],
)
def test_a_node_that_cannot_run_the_training_stops_the_pod_before_ray_with_a_config_error(
    tmp_path, fake_ray, spec, driver, says
):
    done = train(tmp_path, spec, fake_ray, index=1, **driver)
    assert done.returncode == contract.EXIT_CONFIG_ERROR, done.stderr
    assert last_line(done.stderr) == f"soundmind train: preflight failed: node {NODE}: {says}"
    assert ray_calls(fake_ray) == []  # Ray never started


def test_every_problem_of_a_node_is_named_at_once(tmp_path, fake_ray):
    spec = {"resources": {"nodes": 2, "gpusPerNode": 8, "shmSize": "1Pi"}}
    done = train(tmp_path, spec, fake_ray, index=1, driver="535.104.05", gpus=2)
    assert done.returncode == contract.EXIT_CONFIG_ERROR
    said = last_line(done.stderr)
    assert said.startswith(f"soundmind train: preflight failed: node {NODE}: NVIDIA driver 535.104.05 found")
    assert "; 2 GPU(s) visible, resources.gpusPerNode is 8; /dev/shm is " in said


def test_the_head_checks_its_node_before_preparing_data_or_starting_ray(tmp_path, fake_ray, prepared):
    spec = {**TWO_NODES, "dataset": {"path": str(prepared(modality="text")), "modality": "text"}}
    done = train(tmp_path, spec, fake_ray, index=0, driver="570.86.10")
    assert done.returncode == contract.EXIT_CONFIG_ERROR
    assert last_line(done.stderr).endswith(f"node {NODE}: NVIDIA driver 570.86.10 found, {NEEDED}")
    assert "verl" not in done.stdout and ray_calls(fake_ray) == []


def test_a_node_that_can_run_it_says_what_it_found_and_goes_on(tmp_path, fake_ray):
    # No head answers at port 1: past its preflight, the worker gives up joining it.
    done = train(tmp_path, TWO_NODES, fake_ray, "--ray-port", "1", "--join-timeout", "1", index=1, gpus=8)
    said = f"soundmind: preflight: node {NODE}: NVIDIA driver {nvml.DRIVER_580}, 8 GPU(s), /dev/shm {shm_here()}"
    assert done.stdout.splitlines()[0] == said, done.stdout
    assert done.returncode == contract.EXIT_HEAD_LOST, done.stderr


def test_a_dry_run_never_checks_the_node(tmp_path, fake_ray):
    done = train(tmp_path, TWO_NODES, fake_ray, "--dry-run", index=0, driver="450.80.02", gpus=0)
    assert done.returncode == contract.EXIT_OK, done.stderr
    assert "soundmind: preflight" not in done.stdout and "preflight failed" not in done.stderr
    assert "verl.trainer.main_ppo" in done.stdout


def test_the_driver_floor_is_the_one_the_checks_use():
    spec = TrainingSpec.model_validate({"resources": {"gpusPerNode": 1, "shmSize": "1Mi"}})
    floor = f"{preflight.MIN_DRIVER_MAJOR}.00.00"
    below = f"{preflight.MIN_DRIVER_MAJOR - 1}.99.99"
    facts = preflight.NodeFacts(node=NODE, driver=floor, gpus=1, shm_bytes=1 << 20)
    assert preflight.problems(facts, spec) == []
    (problem,) = preflight.problems(preflight.NodeFacts(NODE, below, 1, 1 << 20), spec)
    assert problem.startswith(f"NVIDIA driver {below} found")
    (problem,) = preflight.problems(preflight.NodeFacts(NODE, "unknown", 1, 1 << 20), spec)
    assert problem.startswith("NVIDIA driver unknown found")


def test_the_fake_reads_like_the_real_nvml_on_a_machine_without_a_driver(tmp_path):
    """The fake's failure is the real library's: nvidia-ml-py's `pynvml` on this GPU-less machine."""
    try:
        import pynvml
    except ImportError:
        missing("nvidia-ml-py (pynvml) is not installed; the trainer image and the test environment have it")
    if Path("/dev/nvidiactl").exists():
        pytest.skip("this machine has an NVIDIA driver")
    spec = TrainingSpec.model_validate({"resources": {"gpusPerNode": 1, "shmSize": "1Mi"}})
    with pytest.raises(PreflightError) as real:
        preflight.check(spec, nvml=pynvml)
    with pytest.raises(PreflightError) as fake:
        preflight.check(spec, nvml=nvml.load(nvml.write(tmp_path, error=nvml.NO_LIBRARY)))
    assert str(real.value) == str(fake.value)
    assert real.value.exit_code == contract.EXIT_CONFIG_ERROR
