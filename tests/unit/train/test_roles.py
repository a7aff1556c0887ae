"""What the roles do around Ray, run as real processes: `soundmind train` with a fake `ray` executable
first on PATH (it records its arguments), a fake cluster view command, and a fake NVML first on
PYTHONPATH (a node with a driver its preflight accepts: tests/support/nvml.py). A worker whose head
never answers, and the head's driver, progress and export. The Ray cluster itself (real `ray`, the
production view, the exit codes of a missing worker and of a lost head) is
tests/integration/test_ray_cluster.py's."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind.train.config import PodIdentity
from soundmind.train.dataset import locate
from soundmind.train.launcher import Options, run_head
from soundmind.train.render import render
from tests.support import nvml

FAKE_RAY = """\
#!{python}
import os, sys
with open(os.environ["FAKE_RAY_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def fake_ray(tmp_path: Path) -> dict[str, str]:
    """Environment whose PATH starts with a fake `ray`; its calls land in FAKE_RAY_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ray = bin_dir / "ray"
    ray.write_text(FAKE_RAY.format(python=sys.executable))
    ray.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_RAY_LOG": str(tmp_path / "ray.log")}


def ray_calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_RAY_LOG"])
    return path.read_text().splitlines() if path.exists() else []


def view_command(tmp_path: Path, nodes: int, gpus: int) -> str:
    script = tmp_path / "view.py"
    script.write_text(f"import json; print(json.dumps({{'nodes': {nodes}, 'gpus': {gpus}}}))\n")
    return f"{sys.executable} {script}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


NODE = "gpu-node-7"


def train(
    tmp_path, spec: dict, env: dict[str, str], *arguments: str, index: int, **driver
) -> subprocess.CompletedProcess:
    """`soundmind train` as pod `index` on NODE, whose NVML is `nvml.write(**driver)`."""
    config = tmp_path / "training.yaml"
    config.write_text(json.dumps(spec))
    node_nvml = nvml.write(tmp_path / "nvml", **driver)
    pod_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(node_nvml), *filter(None, [os.environ.get("PYTHONPATH")])]),
        contract.ENV_NODE_NAME: NODE,
        contract.ENV_TRAINING_NAME: "alr-grpo",
        contract.ENV_NAMESPACE: "ml",
        contract.ENV_ATTEMPT: "1",
        contract.ENV_JOB_INDEX: str(index),
        contract.ENV_HEAD_ADDRESS: "127.0.0.1",
    }
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(config)]
    command += ["--checkpoints-root", str(tmp_path / "ckpt"), "--no-status", "--metrics-port", "0", *arguments]
    return subprocess.run(command, env=pod_env, capture_output=True, text=True, timeout=120)


def finished_marker(tmp_path: Path) -> Path:
    return tmp_path / "ckpt" / "alr-grpo" / "logs" / "attempt-1.jsonl.finished"


TWO_NODES = {"resources": {"nodes": 2, "gpusPerNode": 4, "shmSize": "1Gi"}}  # within /dev/shm here, enough for Ray


def test_worker_gives_up_when_the_head_never_answers(tmp_path, fake_ray):
    port = free_port()
    done = train(tmp_path, TWO_NODES, fake_ray, "--ray-port", str(port), "--join-timeout", "1", index=1)
    assert done.returncode == contract.EXIT_HEAD_LOST
    assert f"127.0.0.1:{port} was not reachable within 1s" in done.stderr
    assert ray_calls(fake_ray) == []


DRIVER = """\
import json, os, pathlib
log = pathlib.Path(os.environ["VERL_FILE_LOGGER_PATH"])
checkpoints = pathlib.Path({checkpoints!r})
with log.open("w") as out:
    for step in (1, 2):
        out.write(json.dumps({{"step": step, "data": {{"critic/score/mean": step / 2, "training/epoch": 0}}}}) + "\\n")
(checkpoints / "latest_checkpointed_iteration.txt").write_text("2")
pathlib.Path("outputs").mkdir()  # as verl's Hydra entry point does, in the working directory
"""


# Stands in for verl's model merger: records its arguments and the modules verl would import, and
# writes the Omni config as the merger does (audio output on, as in the source).
MERGER = """\
import json, os, pathlib, sys
target = pathlib.Path(sys.argv[sys.argv.index("--target_dir") + 1])
target.mkdir(parents=True)
call = {{"argv": sys.argv[1:], "modules": os.environ["VERL_USE_EXTERNAL_MODULES"]}}
(target / "call.json").write_text(json.dumps(call))
(target / "config.json").write_text(json.dumps({{"model_type": "qwen2_5_omni", "enable_audio_output": True}}))
sys.exit({exit_code})
"""


def head_plan(tmp_path, prepared, merger_exit: int):
    spec = TrainingSpec.model_validate(
        {**TWO_NODES, "dataset": {"path": str(prepared(modality="text")), "modality": "text"}}
    )
    identity = PodIdentity(training_name="alr-grpo", namespace="ml", attempt=1, index=0, head_address="127.0.0.1")
    plan = render(spec, identity, locate(spec.dataset.path, "text"), checkpoints_root=str(tmp_path / "ckpt"))
    Path(plan.checkpoint_dir).mkdir(parents=True)
    driver = [sys.executable, "-c", textwrap.dedent(DRIVER.format(checkpoints=plan.checkpoint_dir))]
    merger = [sys.executable, "-c", MERGER.format(exit_code=merger_exit)]
    return spec, type(plan)(**{**plan.__dict__, "command": driver, "merger": merger})


def head_options(tmp_path) -> Options:
    return Options(view_command=view_command(tmp_path, nodes=2, gpus=8).split(), metrics_port=0, progress_interval=0.1)


def test_head_runs_the_driver_once_the_cluster_is_complete_then_exports(tmp_path, fake_ray, prepared, monkeypatch):
    monkeypatch.setenv("PATH", fake_ray["PATH"])
    monkeypatch.setenv("FAKE_RAY_LOG", fake_ray["FAKE_RAY_LOG"])
    spec, plan = head_plan(tmp_path, prepared, merger_exit=0)
    patches = []

    assert run_head(spec, plan, head_options(tmp_path), patches.append) == 0

    assert patches[-1]["status"]["progress"]["step"] == 2
    assert patches[-1]["status"]["progress"]["rewardMean"] == 1.0
    assert patches[-1]["status"]["checkpoint"] == {"step": 2, "path": f"{plan.checkpoint_dir}/global_step_2"}
    exported = f"{plan.checkpoint_dir}/export/global_step_2"
    assert patches[-1]["status"]["model"] == {"path": exported, "step": 2}
    call = json.loads((Path(exported) / "call.json").read_text())
    assert call["argv"] == [
        "merge",
        "--backend",
        "fsdp",
        "--local_dir",
        f"{plan.checkpoint_dir}/global_step_2/actor",
        "--target_dir",
        exported,
    ]
    assert call["modules"] == "soundmind.models.qwen2_5_omni"  # the merger resolves Omni through the adapter
    assert json.loads((Path(exported) / "config.json").read_text())["enable_audio_output"] is False  # served as text
    assert finished_marker(tmp_path).read_text().strip() == "0"
    assert (Path(plan.log_path).parent / "outputs").is_dir()  # the driver ran in the attempt's log directory
    # resources.shmSize 1Gi: Ray's object store gets half of it.
    object_store = "--object-store-memory=536870912"
    head = f"start --head --port={contract.RAY_HEAD_PORT} --num-gpus=4 {object_store} --disable-usage-stats"
    assert ray_calls(fake_ray) == [head, "stop --force"]


def test_a_failed_export_fails_the_head_and_reports_no_model(tmp_path, fake_ray, prepared, monkeypatch, capfd):
    monkeypatch.setenv("PATH", fake_ray["PATH"])
    monkeypatch.setenv("FAKE_RAY_LOG", fake_ray["FAKE_RAY_LOG"])
    spec, plan = head_plan(tmp_path, prepared, merger_exit=1)
    patches = []

    assert run_head(spec, plan, head_options(tmp_path), patches.append) == contract.EXIT_EXPORT_FAILED

    assert "training succeeded but the export failed: verl's model merger exited 1" in capfd.readouterr().err
    assert patches[-1]["status"]["checkpoint"]["step"] == 2 and "model" not in patches[-1]["status"]
    assert finished_marker(tmp_path).read_text().strip() == "0"  # the workers ended as finished
