"""The smoke run's CPU part (examples/smoke) on the real node, in the real trainer image.

The image is the one `make images-all` builds (`python -m hack.images trainer`, here built if its
tarball is missing or stale), imported into the real node's containerd. Then, as on a user's cluster:

* examples/smoke/setup.yaml itself runs as a Job: `soundmind model tiny-omni`, `soundmind data synth`
  for both splits and `soundmind data prepare`, writing onto claims `models` and `alr-data` (local
  PersistentVolumes the pod's fsGroup makes writable for the image's user);
* the pod the operator builds for examples/smoke/training.yaml (its Job's template: the ConfigMap
  with the spec, the mounts, the user, the environment; the GPU request taken off, the node has none)
  runs `soundmind train --dry-run` on what the setup made, so every check of the pod passes on that
  model and data (model type, prompt budget on the real rows, 2 steps) and the command verl would run
  is printed.

What needs a GPU (Ray with GPUs, verl's workers, vLLM's engine, the export, serving and eval) is
hack/gpu-smoke.sh's. It lives with the GPU images' other checks (`make test-gpu-images`, not `make
test`: a cold build of the trainer image takes most of an hour) and also needs the local cluster's
binaries (`make tools`). Needs root (the real node) and what hack/images needs (dockerd,
debootstrap); in CI a missing prerequisite fails.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hack.images.build import IMAGES, build
from soundmind.api.training import TrainingSpec
from soundmind.train import contract, export
from soundmind_operator.training import builders
from tests.integration import test_real_node
from tests.support import operator as op
from tests.support import realnode, sim, smoke
from tests.support.kube import Kube
from tests.support.localcluster import LocalCluster
from tests.support.poll import wait_for

pytestmark = pytest.mark.integration

# The local cluster with its real node, and clients of it (also when the session's `kube` is another cluster's).
cluster, kube = test_real_node.cluster, test_real_node.kube

TRAINER_IMAGE = IMAGES["trainer"].tag
ON_REAL_NODE = {realnode.REAL_NODE_LABEL: "true"}
SMALL = {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}  # a shared 2-core machine
SETUP_SECONDS = 900  # a cold start of the image's torch and transformers, espeak-ng, on busy cores


@pytest.fixture(scope="module")
def trainer_image(cluster: LocalCluster) -> str:
    cluster.import_images(build(["trainer"]))
    return TRAINER_IMAGE


@contextlib.contextmanager
def node_volumes(kube: Kube, namespace: str, claims: tuple[str, ...]) -> Iterator[None]:
    """Each claim bound to a local PersistentVolume on the real node: a directory of this machine (the
    node's), root's, that the pod's fsGroup makes writable for the image's user, as on a real cluster."""
    paths = []
    try:
        for claim in claims:
            path = Path("/var/tmp/soundmind-test") / f"{namespace}-{claim}"
            path.mkdir(parents=True)
            paths.append(path)
            on_node = {"matchExpressions": [{"key": realnode.REAL_NODE_LABEL, "operator": "In", "values": ["true"]}]}
            source = {"local": {"path": str(path)}, "nodeAffinity": {"required": {"nodeSelectorTerms": [on_node]}}}
            op.bind_claim(kube, namespace, claim, source, "ReadWriteOnce", "1Gi", reclaim="Retain")
        yield
    finally:
        op.delete_volumes(kube, namespace)
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def on_real_node(pod: dict, image: str) -> None:
    """Pin a pod spec to the real node with the imported image, at a size the machine can hold."""
    pod["nodeSelector"] = ON_REAL_NODE
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        container.update(image=image, imagePullPolicy="Never", resources=copy.deepcopy(SMALL))


def pod_logs(kube: Kube, namespace: str, pod) -> str:
    names = [c.name for c in [*(pod.spec.init_containers or []), *pod.spec.containers]]
    return "\n".join(
        f"--- {name}:\n" + kube.core_v1.read_namespaced_pod_log(pod.metadata.name, namespace, container=name)
        for name in names
        if any(
            s.name == name
            for s in [*(pod.status.init_container_statuses or []), *(pod.status.container_statuses or [])]
        )
    )


def ended(kube: Kube, namespace: str, selector: str, timeout: float, what: str):
    """The pod matching `selector` once it has ended; AssertionError with its logs when it failed."""

    def done():
        pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items
        return next((p for p in pods if p.status.phase in ("Succeeded", "Failed")), None)

    pod = wait_for(done, timeout=timeout, interval=2, what=what)
    assert pod.status.phase == "Succeeded", f"{what}: {pod.status.phase}\n{pod_logs(kube, namespace, pod)}"
    return pod


def test_the_smoke_runs_cpu_part_passes_in_the_trainer_image_on_the_real_node(
    kube: Kube,
    namespace: str,
    trainer_image: str,
):
    training = smoke.manifest("training.yaml")
    name, spec = training["metadata"]["name"], TrainingSpec.model_validate(training["spec"])
    claims = (spec.storage.models.claim_name, spec.storage.data.claim_name, spec.storage.checkpoints.claim_name)
    with node_volumes(kube, namespace, claims):
        setup = smoke.manifest("setup.yaml")
        on_real_node(setup["spec"]["template"]["spec"], trainer_image)
        kube.batch_v1.create_namespaced_job(namespace, setup)
        made = ended(kube, namespace, f"job-name={setup['metadata']['name']}", SETUP_SECONDS, "the setup Job's pod")
        log = pod_logs(kube, namespace, made)
        assert f"{spec.model}: tiny random Qwen2.5-Omni (seed 0, " in log, log
        assert f"{spec.dataset.path}/train.parquet: 8 rows" in log and f"{spec.dataset.path}/dev.parquet: 4 rows" in log

        # The training's pod as the operator builds it, running the dry run instead of the training.
        kube.core_v1.create_namespaced_config_map(namespace, builders.build_configmap(name, spec))
        kube.core_v1.create_namespaced_service_account(namespace, builders.build_service_account(name))
        template = builders.build_job(name, namespace, spec, attempt=1)["spec"]["template"]
        pod = template["spec"]
        container = next(c for c in pod["containers"] if c["name"] == contract.CONTAINER_NAME)
        assert container["command"][:2] == ["soundmind", "train"]
        on_real_node(pod, trainer_image)
        container["command"] = [*container["command"], "--dry-run"]
        container["env"] = [e for e in container["env"] if e["name"] != "JOB_COMPLETION_INDEX"]
        container["env"].append({"name": "JOB_COMPLETION_INDEX", "value": "0"})  # the Job controller's, index 0
        assert sim.GPU_RESOURCE not in str(pod)  # the GPU request is gone with the resources above
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "smoke-dry-run", "labels": {"smoke": "dry-run"}},
        }
        kube.core_v1.create_namespaced_pod(namespace, {**body, "spec": {**pod, "restartPolicy": "Never"}})
        dry_run = pod_logs(kube, namespace, ended(kube, namespace, "smoke=dry-run", 300, "the training pod's dry run"))

    assert dry_run.split("\n", 1)[1].startswith("cd "), dry_run  # no note before the script: no check skipped
    for override in (
        "trainer.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.n=2",
        f"actor_rollout_ref.model.path={spec.model}",
    ):
        assert override in dry_run, override
    assert export.export_dir(contract.checkpoint_dir(name), 2) in dry_run, dry_run
