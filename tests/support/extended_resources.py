"""An extended resource advertised on a node, as Kubernetes documents it (a PATCH of the node's
status capacity): the real node has no GPUs, and a serving's pods request its gpuResource, so tests
advertise one of their own and the scheduler places the pods as it would vLLM's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.support.kube import Kube
from tests.support.poll import wait_for

# The resource the tests advertise (a serving's resources.gpuResource names it).
TEST_GPU = "soundmind.ai/test-gpu"


@contextlib.contextmanager
def advertised(kube: Kube, node: str, count: int, resource: str = TEST_GPU) -> Iterator[None]:
    """``count`` of ``resource`` on ``node`` until the block ends."""
    escaped = resource.replace("/", "~1")
    body = [{"op": "add", "path": f"/status/capacity/{escaped}", "value": str(count)}]
    kube.core_v1.patch_node_status(node, body)  # a list: sent as a JSON patch
    wait_for(
        lambda: (kube.core_v1.read_node(node).status.allocatable or {}).get(resource) == str(count),
        timeout=30,
        what=f"{resource} allocatable on {node}",
    )
    try:
        yield
    finally:
        kube.core_v1.patch_node_status(node, [{"op": "remove", "path": f"/status/capacity/{escaped}"}])
