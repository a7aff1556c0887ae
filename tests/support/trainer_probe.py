"""Run inside a trainer-shaped pod (tests/integration/test_in_cluster.py): what `soundmind train`'s head
does before and around verl, minus verl. It reads the spec from the mounted ConfigMap and the pod's
identity from its environment, replays a recorded verl log (``argv[1]``) into the attempt's log on
the checkpoint volume, marks a checkpoint there as verl would, and lets the real progress reporter
patch the training's status with the pod's mounted ServiceAccount token. Then it tries the same on
another training (``argv[2]``), which the trainer's Role must refuse. It also runs the trainer's
preflight checks on the pod's node as the kubelet set it up (no NVML in this image, so the driver
check fails; the test reads the node name and /dev/shm size). It prints one JSON line of what it
found; the test asserts on it and on the training's status.

Only the Python standard library and the soundmind package: it runs in the operator image.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from kubernetes.client.rest import ApiException

from soundmind.train import contract, preflight
from soundmind.train.config import PodIdentity, load_spec
from soundmind.train.metrics import TrainMetrics
from soundmind.train.progress import ProgressReporter, api_client_from_environment, status_patcher


def main(recorded_log: str, other_training: str) -> int:
    spec = load_spec(contract.CONFIG_PATH)
    identity = PodIdentity.from_env()
    checkpoints = Path(contract.checkpoint_dir(identity.training_name))
    log_path = Path(contract.attempt_log_path(str(checkpoints), identity.attempt))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    records = Path(recorded_log).read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(records))
    last_step = json.loads(records[-1])["step"]
    (checkpoints / "latest_checkpointed_iteration.txt").write_text(str(last_step))

    node = preflight.inspect()
    api = api_client_from_environment()
    reporter = ProgressReporter(
        log_path, checkpoints, TrainMetrics(), status_patcher(api, identity.namespace, identity.training_name)
    )
    reporter.poll(force=True)
    try:
        status_patcher(api, identity.namespace, other_training)({"status": {"progress": {"step": 1}}})
        other = "allowed"
    except ApiException as error:
        other = error.status
    print(
        json.dumps(
            {
                "uid": os.getuid(),
                "training": identity.training_name,
                "attempt": identity.attempt,
                "modality": spec.dataset.modality,
                "log": str(log_path),
                "log_owner": log_path.stat().st_uid,
                "shm_is_tmpfs": _filesystem("/dev/shm") == "tmpfs",
                "node": node.node,
                "shm_bytes": node.shm_bytes,
                "preflight": preflight.problems(node, spec),
                "patched": reporter.published is not None,
                "other_training": other,
            }
        ),
        flush=True,
    )
    return 0


def _filesystem(mount_point: str) -> str | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, where, kind, *_ = line.split()
        if where == mount_point:
            return kind
    return None


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
