"""The simulation contract of the local cluster: what kwok's fake nodes look like and the pod
annotations that steer simulated pod lifecycles. Tests (and the operator's tests) import these
names; the kwok Stage list in :mod:`tests.support.stages` is generated from them.

Pod lifecycle on a simulated node:

* a pod bound to a node becomes Running and Ready;
* a Job-owned pod annotated ``RUN_DURATION`` (a Go duration such as ``"2s"`` or ``"1m30s"``) then
  succeeds with exit code 0 after that long; without it, it runs until told otherwise;
* any running pod annotated ``EXIT_CODE`` (in its template, or patched onto the live pod)
  terminates: ``"0"`` -> Succeeded, anything else -> Failed, with
  ``containerStatuses[].state.terminated.exitCode`` set to it and reason ``EXIT_REASON`` (default
  ``"Error"``, ``"Completed"`` for 0). With ``RUN_DURATION`` too, it terminates after that long;
* deleted pods are removed.

Run durations count from the pod's ``status.startTime``; changing a running pod does not restart them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GPU_RESOURCE = "nvidia.com/gpu"

# Pod annotations (contract for tests).
RUN_DURATION = "sim.soundmind.ai/run-duration"
EXIT_CODE = "sim.soundmind.ai/exit-code"
EXIT_REASON = "sim.soundmind.ai/exit-reason"
EXIT_MESSAGE = "sim.soundmind.ai/exit-message"

# Label kwok selects the nodes it manages by; nodes without it are left alone.
MANAGED_NODE_LABEL = "sim.soundmind.ai/kwok"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"


@dataclass(frozen=True)
class NodeShape:
    """Capacity and labels of one simulated node (allocatable == capacity)."""

    gpus: int = 8
    cpu: str = "96"
    memory: str = "1Ti"
    pods: int = 110
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    labels: dict[str, str] = field(default_factory=dict)

    def capacity(self) -> dict[str, str]:
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": str(self.pods),
            "ephemeral-storage": "10Ti",
            GPU_RESOURCE: str(self.gpus),
        }


DEFAULT_NODE_COUNT = 2
DEFAULT_NODE_SHAPE = NodeShape()
NODE_NAME_PREFIX = "sim-gpu-"


def node_manifest(index: int, shape: NodeShape = DEFAULT_NODE_SHAPE) -> dict:
    """The ``index``-th simulated Node, for kwok to manage (the API server accepts status on create)."""
    name = f"{NODE_NAME_PREFIX}{index}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"sim-{shape.gpus}gpu",
        MANAGED_NODE_LABEL: "true",
        GPU_PRESENT_LABEL: "true" if shape.gpus else "false",
        "nvidia.com/gpu.count": str(shape.gpus),
        "nvidia.com/gpu.product": shape.gpu_product,
        **shape.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "status": {
            "capacity": shape.capacity(),
            "allocatable": shape.capacity(),
            "addresses": [
                {"type": "InternalIP", "address": f"10.240.{index // 250}.{index % 250 + 1}"},
                {"type": "Hostname", "address": name},
            ],
        },
    }
