"""The Ray cluster of a 2-node training, formed by the real launcher roles with the real `ray` of the
trainer lock: `soundmind train` as index 0 (Ray head, the production cluster view
`soundmind.train.ray_view`, verl's driver) and as index 1 (a Ray worker), each in a pod of its own
made without Kubernetes (:mod:`tests.support.netns_pods`: network, PID and mount namespaces, an
in-memory /dev/shm of `resources.shmSize`, a read-only working directory as the image's is to its
user), with the environment the operator gives training pods.
The worker finds the head at the name the operator puts in SOUNDMIND_HEAD_ADDRESS, which its
/etc/hosts resolves as the headless Service's DNS record would. Each node advertises
`gpusPerNode` GPUs: Ray takes `--num-gpus` without a device.

Proved: the head's cluster view counts 2 nodes and 2 x gpusPerNode GPUs; each node's object store
is in its pod's in-memory /dev/shm; the head then runs verl's driver with exactly the rendered
command, and that driver passes verl's config checks and joins this cluster. Where it stops here
the test prints (with the shared test environment: verl's TaskRunner imports `transfer_queue`, which
the trainer image's lock has and the environment's verl requirements do not). A worker that never
comes ends the head with EXIT_WORKERS_MISSING after `--join-timeout`; a head that dies ends the
worker with EXIT_HEAD_LOST.

Not a Kubernetes test (no control plane), but it needs root and creates network namespaces, so it
lives with the integration tests and runs under their lock. Ray starts in tens of seconds here; the
figures are printed (`-s`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.utils import parse_quantity

from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind.train.config import PodIdentity, dump_spec
from soundmind.train.dataset import locate
from soundmind.train.render import VERL_ENTRYPOINT, render
from soundmind_operator.training.builders import head_address
from tests.support import nvml
from tests.support.netns_pods import Pod, PodNetwork, missing_prerequisites
from tests.support.prerequisite import missing
from tests.unit.train.conftest import write_split

TRAINING, NAMESPACE, ATTEMPT = "alr-grpo", "ml", 1
GPUS_PER_NODE = 4  # not the node count: a view that mixed up nodes and GPUs would show
SPEC = {"resources": {"nodes": 2, "gpusPerNode": GPUS_PER_NODE, "shmSize": "1Gi"}}
RAY = Path(sys.executable).parent / "ray"  # the trainer lock's, from the environment that runs the tests
STARTUP = 300.0  # seconds for Ray to start on a busy 2-core machine (measured: see the printed figures)
JOIN_TIMEOUT_WHEN_NONE_COMES = 20.0
# Where workers find index 0: the headless Service's name for it, as the operator renders it.
HEAD_NAME = head_address(TRAINING, NAMESPACE, ATTEMPT, TrainingSpec.model_validate(SPEC))


def figure(name: str, seconds: float) -> None:
    print(f"\n[ray cluster] {name}: {seconds:.1f}s", flush=True)


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """The volumes every pod of the training mounts (checkpoints, data, the rendered config), and a
    prepared text data set on it."""
    if problems := missing_prerequisites() + ([] if RAY.is_file() else [f"Ray's `ray` executable ({RAY})"]):
        missing("the Ray cluster test needs " + ", ".join(problems))
    directory = tmp_path / "shared"
    data = directory / "data" / "prepared"
    data.mkdir(parents=True)
    write_split(data / "train.parquet", 64, "text")
    write_split(data / "dev.parquet", 8, "text")
    spec = TrainingSpec.model_validate({**SPEC, "dataset": {"path": str(data), "modality": "text"}})
    (directory / contract.CONFIG_FILE).write_text(dump_spec(spec))
    return directory


@pytest.fixture
def network(tmp_path: Path, shared: Path) -> Iterator[PodNetwork]:
    net = PodNetwork(tmp_path / "net")
    try:
        yield net.create()
    finally:
        net.remove()  # also what a failed create made


@pytest.fixture
def pods(tmp_path: Path, shared: Path, network: PodNetwork) -> Iterator[callable]:
    """start(index, join_timeout) -> the training's pod of that index, running `soundmind train`;
    every pod is killed at the end and nothing of it may be left."""
    started: list[Pod] = []
    spec = TrainingSpec.model_validate(_load(shared))

    def start(index: int, join_timeout: float) -> Pod:
        # The node's NVML (a fake with gpusPerNode GPUs and a supported driver): the preflight runs first.
        node_nvml = nvml.write(shared / f"nvml-{index}", gpus=spec.resources.gpus_per_node)
        env = {
            **pod_env(index),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(node_nvml), os.environ.get("PYTHONPATH")])),
        }
        argv = [sys.executable, "-m", "soundmind", "train", "--config", str(shared / contract.CONFIG_FILE)]
        argv += [
            "--checkpoints-root",
            str(shared / "checkpoints"),
            "--no-status",
            "--join-timeout",
            f"{join_timeout:g}",
        ]
        pod = Pod(
            f"pod-{index}",
            network,
            index,
            argv,
            shared=shared,
            hosts={HEAD_NAME: network.ip(0)},
            shm_bytes=int(parse_quantity(spec.resources.shm_size)),
            env=env,
            log=tmp_path / f"pod-{index}.log",
        )
        started.append(pod)  # stopped at the end even if its start fails half-way
        return pod.start()

    yield start
    for pod in started:
        pod.stop(timeout=0)
    for pod in started:
        assert not pod.leftovers(), f"{pod.name} left processes behind: {pod.leftovers(0)}"


def _load(shared: Path) -> dict:
    import yaml

    return yaml.safe_load((shared / contract.CONFIG_FILE).read_text())


def pod_env(index: int) -> dict[str, str]:
    """What the operator sets on a training pod (soundmind_operator.training.builders), and the
    Job controller's index; `ray` on PATH as in the trainer image."""
    return {
        "PATH": f"{RAY.parent}{os.pathsep}{os.environ['PATH']}",
        contract.ENV_TRAINING_NAME: TRAINING,
        contract.ENV_NAMESPACE: NAMESPACE,
        contract.ENV_ATTEMPT: str(ATTEMPT),
        contract.ENV_HEAD_ADDRESS: HEAD_NAME,
        contract.ENV_JOB_INDEX: str(index),
    }


def rendered_command(shared: Path) -> list[str]:
    """The verl command `soundmind train --dry-run` prints for the head pod."""
    spec = TrainingSpec.model_validate(_load(shared))
    identity = PodIdentity.from_env(pod_env(0))
    dataset = locate(spec.dataset.path, spec.dataset.modality)
    return render(spec, identity, dataset, checkpoints_root=str(shared / "checkpoints")).command


def finished_marker(shared: Path) -> Path:
    log = contract.attempt_log_path(contract.checkpoint_dir(TRAINING, str(shared / "checkpoints")), ATTEMPT)
    return Path(f"{log}.finished")


def ready_line(nodes: int) -> str:
    return f"Ray cluster ready: {nodes} node(s), {nodes * GPUS_PER_NODE} GPU(s)"


def wait_for_driver(head: Pod, timeout: float) -> list[str]:
    """verl's driver, seen as a process of the head pod: its argv."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for argv in head.processes().values():
            if argv[1:3] == ["-m", VERL_ENTRYPOINT]:
                return argv
        if head.exited():
            break
        time.sleep(0.2)
    raise AssertionError(f"no verl driver seen in the head pod within {timeout:g}s:\n{head.log_tail(60)}")


def object_store_files(pod: Pod) -> list[str]:
    """The files the pod's raylet maps its object store (Ray's plasma) from."""
    files = set()
    for pid, argv in pod.processes().items():
        if argv and Path(argv[0]).name == "raylet":
            maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
            files |= {line.split(None, 5)[5] for line in maps if line.count(" ") >= 5 and "plasma" in line}
    return sorted(files)


def driver_stop(output: str) -> str:
    """The last error line verl's driver printed: where the run stops on this machine."""
    errors = [line for line in output.splitlines() if "Error" in line or "error:" in line]
    return errors[-1][:500] if errors else "(no error line)"


def test_two_pods_form_the_cluster_and_the_head_starts_verls_driver(shared, pods, network):
    head = pods(0, join_timeout=STARTUP)
    worker = pods(1, join_timeout=STARTUP)

    # The numbers are the production view's (soundmind.train.ray_view), counted by the real Ray.
    figure("head start to a complete cluster (ray_view: 2 nodes)", head.wait_for_output(ready_line(2), STARTUP))
    # The worker found the head by the operator's name for it (the pod's hosts file here, the cluster's
    # DNS on Kubernetes) and Ray joined the address that name resolved to.
    joined = f"soundmind: ray start --address={network.ip(0)}:{contract.RAY_HEAD_PORT} --num-gpus={GPUS_PER_NODE}"
    assert joined in worker.output(), worker.log_tail(20)
    # Each node's object store is in its pod's in-memory /dev/shm (half of resources.shmSize).
    for pod in (head, worker):
        files = object_store_files(pod)
        print(f"\n[ray cluster] {pod.name}'s raylet maps its object store from {files}")
        assert files and all(file.startswith("/dev/shm/plasma") for file in files), files
    driver = wait_for_driver(head, timeout=120)
    figure("head start to verl's driver process", time.monotonic() - head.started_at)
    assert driver == rendered_command(shared)

    code = head.wait(timeout=STARTUP)
    ended = time.monotonic()
    figure("head start to head exit", ended - head.started_at)
    output = head.output()
    print(f"\n[ray cluster] verl's driver exited {code}; it stops at: {driver_stop(output)}")
    # verl checked the rendered config and its driver joined this cluster (not a new local one).
    assert "[validate_config] All configuration checks passed successfully!" in output
    assert "Connected to Ray cluster." in output
    assert f"verl driver exited {code}" in output
    # Hydra's outputs/ went to the attempt's log directory: the pod's working directory is read-only.
    assert (finished_marker(shared).parent / "outputs").is_dir()
    assert finished_marker(shared).read_text().strip() == str(code)
    # The head stopped Ray after writing the marker: the worker ends as finished, not as lost.
    assert worker.wait(timeout=STARTUP) == contract.EXIT_OK, worker.log_tail(60)
    figure("head exit to worker exit 0", time.monotonic() - ended)


def test_the_head_gives_up_when_a_worker_never_comes(shared, pods):
    head = pods(0, join_timeout=JOIN_TIMEOUT_WHEN_NONE_COMES)

    assert head.wait(timeout=STARTUP) == contract.EXIT_WORKERS_MISSING, head.log_tail(60)
    figure(
        f"head start to exit {contract.EXIT_WORKERS_MISSING} (join timeout {JOIN_TIMEOUT_WHEN_NONE_COMES:g}s)",
        time.monotonic() - head.started_at,
    )
    output = head.output()
    assert f"needs 2 node(s) with {2 * GPUS_PER_NODE} GPU(s)" in output
    assert f"has 1 node(s) with {GPUS_PER_NODE} GPU(s) after {JOIN_TIMEOUT_WHEN_NONE_COMES:g}s" in output
    assert "verl driver exited" not in output  # verl never started on a partial cluster
    assert finished_marker(shared).read_text().strip() == str(contract.EXIT_WORKERS_MISSING)


def test_a_worker_ends_as_head_lost_when_the_head_dies(shared, pods):
    head = pods(0, join_timeout=STARTUP)
    worker = pods(1, join_timeout=STARTUP)
    head.wait_for_output(ready_line(2), STARTUP)

    head.kill()  # the head's pod is gone (its node lost): no marker, no `ray stop`
    killed = time.monotonic()
    assert worker.wait(timeout=STARTUP) == contract.EXIT_HEAD_LOST, worker.log_tail(60)
    figure("head killed to worker exit 75", time.monotonic() - killed)
    assert "before the head finished: head lost" in worker.output()
    assert not finished_marker(shared).exists()
