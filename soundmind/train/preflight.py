"""Before Ray starts, each training pod checks that its node can run the trainer image at all.

A node whose NVIDIA driver is too old for the image's CUDA 13 wheels, that shows the pod fewer GPUs
than `resources.gpusPerNode`, or whose `/dev/shm` is smaller than `resources.shmSize`, would otherwise
fail long after scheduling, somewhere inside Ray, NCCL or CUDA (Ray is told the GPU count, it does
not look). Each check runs, and every problem found is named in one message, with the node
(`contract.ENV_NODE_NAME`, from the downward API), what was found and what is needed. The pod exits
EXIT_CONFIG_ERROR: the Job fails without retry and the operator shows Failed/ConfigError with the
message (the pod's termination message is the tail of its log, `FallbackToLogsOnError`).

The driver and the GPUs are read through NVML (`pynvml`, from `nvidia-ml-py` in the trainer image's
lock), the library the NVIDIA container toolkit mounts with the driver; the shared memory with
`statvfs`. `soundmind train --dry-run` never runs these checks: it renders on any machine.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from types import ModuleType

from soundmind.api.training import TrainingSpec
from soundmind.errors import PreflightError
from soundmind.train import contract

# The trainer image's torch and vLLM wheels are built for CUDA 13, which needs this driver or newer.
MIN_DRIVER_MAJOR = 580


@dataclass(frozen=True)
class NodeFacts:
    """What a pod finds on its node."""

    node: str
    driver: str | None  # the NVIDIA driver version, None when NVML cannot reach one
    gpus: int  # the GPUs NVML shows this container
    shm_bytes: int  # the size of the /dev/shm file system
    nvml_error: str = ""  # why `driver` is None

    def describe(self) -> str:
        driver = f"NVIDIA driver {self.driver}" if self.driver else "no NVIDIA driver"
        return f"node {self.node}: {driver}, {self.gpus} GPU(s), {contract.SHM_MOUNT} {size_text(self.shm_bytes)}"


def node_name() -> str:
    """The node, as the operator's downward API gives it; the pod's host name where it does not."""
    return os.environ.get(contract.ENV_NODE_NAME) or f"unknown (pod {socket.gethostname()})"


def inspect(nvml: ModuleType | None = None) -> NodeFacts:
    """Read the driver version and GPU count through NVML (`pynvml` unless given), and the size of /dev/shm."""
    stat = os.statvfs(contract.SHM_MOUNT)
    shm_bytes = stat.f_blocks * stat.f_frsize
    node = node_name()
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            return NodeFacts(node, None, 0, shm_bytes, f"nvidia-ml-py is not installed ({exc})")
    try:
        nvml.nvmlInit()
        try:
            driver = nvml.nvmlSystemGetDriverVersion()
            gpus = nvml.nvmlDeviceGetCount()
        finally:
            nvml.nvmlShutdown()
    except nvml.NVMLError as exc:
        return NodeFacts(node, None, 0, shm_bytes, f"NVML: {exc}")
    return NodeFacts(node, driver.decode() if isinstance(driver, bytes) else str(driver), int(gpus), shm_bytes)


def problems(facts: NodeFacts, spec: TrainingSpec) -> list[str]:
    """What keeps this node from running `spec`'s pod, in words a user can act on; empty when nothing."""
    found = []
    needed = f"{MIN_DRIVER_MAJOR} or newer is needed (the trainer image's CUDA 13 wheels)"
    if facts.driver is None:
        found.append(f"no NVIDIA driver found ({facts.nvml_error}); {needed}")
    elif (major := _major(facts.driver)) is None or major < MIN_DRIVER_MAJOR:
        found.append(f"NVIDIA driver {facts.driver} found, {needed}")
    wanted = spec.resources.gpus_per_node
    if facts.driver is not None and facts.gpus < wanted:
        found.append(f"{facts.gpus} GPU(s) visible, resources.gpusPerNode is {wanted}")
    shm_wanted = _bytes(spec.resources.shm_size)
    if facts.shm_bytes < shm_wanted:
        found.append(
            f"{contract.SHM_MOUNT} is {size_text(facts.shm_bytes)}, resources.shmSize is {spec.resources.shm_size} "
            "(the kubelet sizes it at the smaller of shmSize and resources.memory)"
        )
    return found


def check(spec: TrainingSpec, nvml: ModuleType | None = None) -> NodeFacts:
    """The node's facts if it can run `spec`'s pod; PreflightError naming the node and every problem."""
    facts = inspect(nvml)
    found = problems(facts, spec)
    if found:
        raise PreflightError(f"node {facts.node}: " + "; ".join(found))
    return facts


def _major(version: str) -> int | None:
    head = version.strip().split(".")[0]
    return int(head) if head.isdigit() else None


def _bytes(quantity: str) -> int:
    from kubernetes.utils.quantity import parse_quantity

    return int(parse_quantity(quantity))


def size_text(count: int) -> str:
    """A byte count as a Kubernetes-style binary quantity, as people read it (`23.54Gi`)."""
    for unit, scale in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.4g}{unit}"
    return f"{count}B"
