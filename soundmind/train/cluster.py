"""One node or many: index 0 runs the Ray head and the verl driver, other indexes run Ray workers.

The head waits until every node has joined with its GPUs, so a missing node is a clear error
(EXIT_WORKERS_MISSING) instead of verl waiting for resources forever. A worker joins the head at its
stable DNS name and blocks in `ray start --block`; when that returns, the head either finished (it
leaves a marker on the shared checkpoint volume first: exit 0) or was lost (EXIT_HEAD_LOST).

How the head sees the cluster is pluggable: any command that prints `{"nodes": N, "gpus": G}`
(default: `soundmind.train.ray_view`, which asks Ray), so tests can run the real control flow with
fake `ray` executables.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from soundmind.errors import ConfigError
from soundmind.train import contract

RAY = "ray"  # the executable, from PATH
VIEW_COMMAND = (sys.executable, "-m", "soundmind.train.ray_view")
# Ray's object store lives in /dev/shm, of which the pod has resources.shmSize; NCCL and the data
# loaders need the rest. Left to itself, Ray takes 30% of the pod's memory capped at 95% of /dev/shm,
# and when /dev/shm is smaller than that (any shmSize under about 10 GB) puts the store on the
# container's disk instead, with a warning nobody sees.
OBJECT_STORE_SHARE_OF_SHM = 0.5
RAY_MIN_OBJECT_STORE_BYTES = 75 * 1024 * 1024  # Ray refuses a smaller object store


class ClusterError(RuntimeError):
    """The Ray cluster could not be formed; `exit_code` is what the pod exits with."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


@dataclass(frozen=True)
class ClusterState:
    nodes: int
    gpus: float


def command_view(command: Sequence[str], timeout: float = 30.0) -> Callable[[], ClusterState | None]:
    """A cluster view that runs `command`; None while it fails (the head may still be starting)."""

    def view() -> ClusterState | None:
        try:
            done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                return None
            state = json.loads(done.stdout.strip().splitlines()[-1])
            return ClusterState(nodes=int(state["nodes"]), gpus=float(state["gpus"]))
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError, TypeError):
            return None

    return view


def object_store_bytes(shm_size: str) -> int:
    """The Ray object store of a pod with `shm_size` (a Kubernetes quantity) of /dev/shm."""
    from kubernetes.utils import parse_quantity

    size = int(parse_quantity(shm_size) * Decimal(str(OBJECT_STORE_SHARE_OF_SHM)))
    if size < RAY_MIN_OBJECT_STORE_BYTES:
        need = RAY_MIN_OBJECT_STORE_BYTES / OBJECT_STORE_SHARE_OF_SHM / 2**20
        raise ConfigError(
            "resources.shmSize",
            f"{shm_size} leaves Ray's object store {size} bytes ({OBJECT_STORE_SHARE_OF_SHM:.0%} of /dev/shm), "
            f"under the {RAY_MIN_OBJECT_STORE_BYTES} Ray needs; set at least {need:.0f}Mi",
        )
    return size


def _node_arguments(gpus_per_node: int, object_store: int) -> list[str]:
    """What every node of the cluster advertises, head and workers alike."""
    return [f"--num-gpus={gpus_per_node}", f"--object-store-memory={object_store}", "--disable-usage-stats"]


def start_head(gpus_per_node: int, object_store: int, port: int = contract.RAY_HEAD_PORT) -> None:
    _ray("start", "--head", f"--port={port}", *_node_arguments(gpus_per_node, object_store))


def stop_ray() -> None:
    subprocess.run([RAY, "stop", "--force"], capture_output=True, text=True)


def _ray(*arguments: str) -> None:
    try:
        done = subprocess.run([RAY, *arguments], capture_output=True, text=True)
    except OSError as exc:
        raise ClusterError(f"cannot run {RAY!r}: {exc}", 1) from None
    if done.returncode != 0:
        raise ClusterError(f"`ray {' '.join(arguments)}` exited {done.returncode}: {done.stderr.strip()[-2000:]}", 1)


def wait_for_nodes(
    view: Callable[[], ClusterState | None],
    nodes: int,
    gpus_per_node: int,
    timeout: float,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ClusterState:
    """Block until `nodes` nodes with `nodes × gpus_per_node` GPUs have joined; ClusterError after `timeout`."""
    deadline = clock() + timeout
    state = None
    while True:
        state = view() or state
        if state is not None and state.nodes >= nodes and state.gpus >= nodes * gpus_per_node:
            return state
        if clock() >= deadline:
            seen = f"{state.nodes} node(s) with {state.gpus:g} GPU(s)" if state else "no answer from the Ray head"
            raise ClusterError(
                f"the Ray cluster needs {nodes} node(s) with {nodes * gpus_per_node} GPU(s) "
                f"(resources.nodes × resources.gpusPerNode) but has {seen} after {timeout:g}s; "
                "check that every training pod is running and can reach the head",
                contract.EXIT_WORKERS_MISSING,
            )
        sleep(poll)


def finished_marker(log_path: str | Path) -> Path:
    """Written by the head on the shared checkpoint volume when its driver has exited."""
    return Path(f"{log_path}.finished")


def mark_finished(log_path: str | Path, exit_code: int) -> None:
    marker = finished_marker(log_path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{exit_code}\n")


def wait_for_port(host: str, port: int, timeout: float, poll: float = 1.0) -> str | None:
    """The address `host` resolved to once `port` accepts a connection there; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(poll, 5.0)) as connection:
                return connection.getpeername()[0]
        except OSError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)


def run_worker(head: str, gpus_per_node: int, object_store: int, log_path: str, join_timeout: float, port: int) -> int:
    """Join the head, block until the Ray worker ends, and say whether the head finished or was lost."""
    address = wait_for_port(head, port, join_timeout)
    if address is None:
        print(f"soundmind: the Ray head {head}:{port} was not reachable within {join_timeout:g}s", file=sys.stderr)
        return contract.EXIT_HEAD_LOST
    # Ray joins the address that just answered: its gRPC resolver does not read /etc/hosts, so a head
    # name only the system's resolver knows (a pod's hostAliases, a test's hosts file) would never join.
    command = [RAY, "start", f"--address={address}:{port}", *_node_arguments(gpus_per_node, object_store)]
    print("soundmind: " + " ".join([*command, "--block"]), flush=True)
    code = subprocess.run([*command, "--block"]).returncode
    if finished_marker(log_path).exists():
        return contract.EXIT_OK
    print(f"soundmind: the Ray worker ended (exit {code}) before the head finished: head lost", file=sys.stderr)
    return contract.EXIT_HEAD_LOST
