"""An operator upgrade and its rollback with Helm, under live trainings and servings: the operator
chart of a fixed older commit, its CRDs and its operator (a pod on the local cluster's real node),
upgraded with `helm upgrade` to this checkout's charts and image, then `helm rollback` to it again.
In one namespace, 20 trainings in every phase and 5 servings (fixed and autoscaled) with their
replicas Ready, on kwok's GPU nodes; one running training is a two-node group with one pod on a kwok
node and one on the real node, which then advertises a GPU, where its container runs for real (a
stand-in trainer that waits to be stopped). Across each
hand-over no pod is replaced or restarted, no Job or ReplicaSet is made, no other child is
recreated or lost, no attempt counter moves, and no status field is lost or set back; the new
operator has reconciled every object within 30 s of the `helm` command's start.

The older operator's image is this checkout's operator image with the older commit's packages on
top (`previous_image`): the older commit's image dependencies are this checkout's (the fixture
checks it), so it runs exactly the older code, and no second image is built.

The older commit is read from this repository's history (`git archive`): a checkout without it
cannot run this test (in CI that fails it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from hack.images.build import IMAGES, build
from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from soundmind.train.contract import EXIT_CONFIG_ERROR
from soundmind_operator import children, metrics
from tests.integration import on_real_node
from tests.support import operator as op
from tests.support import realnode, resources, sim
from tests.support.kube import Kube
from tests.support.localcluster import LocalCluster
from tests.support.oci_archive import LayerFile, layered_archive, write_image_archive
from tests.support.poll import wait_for
from tests.support.prerequisite import missing
from tests.support.trainings import (
    create_training,
    driver,
    end_pod,
    failed_with,
    phase_is,
    running_pods,
    wait_training,
)
from tests.unit.charts.helm import OPERATOR_CHART, build_dependencies, helm

pytestmark = pytest.mark.integration

PREVIOUS = "b4ce7c0"  # main before the pod template policy (children.plan)
PREVIOUS_IMAGE = f"soundmind-operator:{PREVIOUS}"
PREVIOUS_ROOT = "opt/previous"  # in the image, ahead of the installed packages on PYTHONPATH
# What decides the operator image's dependencies: the older commit's must be this checkout's.
IMAGE_DEPENDENCIES = ("images/operator/requirements.lock", "images/operator/Dockerfile", "pyproject.toml")
RELEASE, RELEASE_NAMESPACE = "upgrade", "soundmind-upgrade"
SOUNDMIND_CRDS = ("soundmindtrainings.soundmind.ai", "soundmindservings.soundmind.ai")
SMALL = {"gpusPerNode": 1, "cpu": "4", "memory": "16Gi"}  # fits a kwok node beside the others
UNPLACEABLE = {**SMALL, "nodeSelector": {"example.com/pool": "none"}}
# The two-node training's pool: the real node and one kwok node (its pods go one per node).
POOL_LABEL, POOL = "soundmind.ai/test-pool", "real-and-kwok"
TWO_NODES = {"nodes": 2, "gpusPerNode": 1, "cpu": "100m", "memory": "256Mi", "shmSize": "64Mi"}
TRAINER_STANDIN = "soundmind-trainer-standin:dev"  # busybox, and a `soundmind` that waits for SIGTERM
STANDIN_TRAINER_SCRIPT = """#!/bin/sh
# `soundmind train ...` as a running trainer looks from outside: it runs until its pod is stopped.
trap 'exit 0' TERM
sleep 2147483647 &
wait
"""
SERVER_IMAGE = "registry.invalid/soundmind/server:sim"  # never pulled: kwok runs no containers
RECONCILED_WITHIN = 30.0
GROWING = ("gpuSeconds", "gpuSecondsUpdatedAt")  # a running training's, rewritten every resync
PHASE_ORDER = {  # a status may move on, never back
    TRAINING.kind: ["Pending", "Queued", "Running", "Suspended", "Succeeded", "Failed"],
    SERVING.kind: ["Pending", "Progressing", "Degraded", "Available", "Failed"],
}
# The children other than pods, ReplicaSets and Jobs that the operator makes (those it owns, and a
# Job's PodGroup); a kind this cluster does not serve is left out.
OTHER_CHILDREN = (
    "configmaps,serviceaccounts,roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io,"
    "services,poddisruptionbudgets.policy,horizontalpodautoscalers.autoscaling"
)
OPTIONAL_CHILDREN = ("scaledobjects.keda.sh", "podgroups.scheduling.k8s.io", "servicemonitors.monitoring.coreos.com")


cluster, kube = on_real_node.fixtures()


@pytest.fixture(scope="module")
def previous_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"soundmind-{PREVIOUS}")
    archive = subprocess.run(["git", "-C", str(op.ROOT), "archive", PREVIOUS], capture_output=True)
    if archive.returncode != 0:
        missing(f"the operator of commit {PREVIOUS}: git archive says {archive.stderr.decode().strip()!r}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
    for path in IMAGE_DEPENDENCIES:
        assert (out / path).read_bytes() == (op.ROOT / path).read_bytes(), (
            f"{path} differs from {PREVIOUS}'s: this checkout's operator image cannot run {PREVIOUS}'s "
            "operator; build that commit's image instead"
        )
    helm("dependency", "build", str(out / "charts" / "soundmind-operator"), "--skip-refresh")
    return out


@pytest.fixture(scope="module")
def previous_image(cluster: LocalCluster, previous_source: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """This checkout's operator image, and the older commit's packages over it (PYTHONPATH comes
    before the installed ones), both imported into the real node's containerd."""
    (current,) = build(["operator"])
    files = [
        LayerFile(f"{PREVIOUS_ROOT}/{path.relative_to(previous_source)}", path, mode=0o644)
        for package in ("soundmind", "operator/soundmind_operator")
        for path in sorted((previous_source / package).rglob("*"))
        if path.is_file()
    ]
    env = (f"PYTHONPATH=/{PREVIOUS_ROOT}:/{PREVIOUS_ROOT}/operator",)
    previous = layered_archive(current, tmp_path_factory.mktemp("images") / "previous.tar", PREVIOUS_IMAGE, files, env)
    cluster.import_images([current, previous])
    return PREVIOUS_IMAGE


@pytest.fixture(scope="module")
def trainer_standin(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("trainer-standin")
    script = folder / "soundmind"
    script.write_text(STANDIN_TRAINER_SCRIPT)
    files = [
        LayerFile("bin/busybox", realnode.BUSYBOX),
        *(LayerFile(f"bin/{applet}", link="busybox") for applet in ("sh", "sleep")),
        LayerFile("usr/local/bin/soundmind", script),
    ]
    archive = write_image_archive(
        folder / "image.tar", TRAINER_STANDIN, files, ["/bin/sh"], env=("PATH=/usr/local/bin:/bin",)
    )
    cluster.import_images([archive])
    return TRAINER_STANDIN


@pytest.fixture
def real_and_kwok_pool(kube: Kube, namespace: str) -> Iterator[None]:
    """The real node advertising one GPU, and it and one kwok GPU node labelled as one pool. The
    hostPath volumes of the namespace's claims are this machine's directories on the real node."""
    kwok = next(
        n.metadata.name
        for n in kube.core_v1.list_node(
            label_selector=f"{sim.MANAGED_NODE_LABEL}=true,{sim.GPU_PRESENT_LABEL}=true"
        ).items
    )
    escaped = sim.GPU_RESOURCE.replace("/", "~1")
    kube.core_v1.patch_node_status(
        realnode.NODE_NAME, [{"op": "add", "path": f"/status/capacity/{escaped}", "value": "1"}]
    )
    wait_for(
        lambda: (kube.core_v1.read_node(realnode.NODE_NAME).status.allocatable or {}).get(sim.GPU_RESOURCE) == "1",
        timeout=30,
        what=f"{sim.GPU_RESOURCE} allocatable on {realnode.NODE_NAME}",
    )
    pool = (realnode.NODE_NAME, kwok)
    for node in pool:
        kube.core_v1.patch_node(node, {"metadata": {"labels": {POOL_LABEL: POOL}}})
    directories = [Path(f"/tmp/{namespace}-{claim}") for claim in op.DEFAULT_CLAIMS]  # op.create_volumes' paths
    for directory in directories:
        directory.mkdir(exist_ok=True)
    yield
    for node in pool:
        kube.core_v1.patch_node(node, {"metadata": {"labels": {POOL_LABEL: None}}})
    kube.core_v1.patch_node_status(realnode.NODE_NAME, [{"op": "remove", "path": f"/status/capacity/{escaped}"}])
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


HELM_WAIT = 120  # seconds, helm's own --timeout for an upgrade or rollback


def kube_helm(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    """`helm *args` on the cluster; its subprocess outlives a `--timeout` of HELM_WAIT (or 180 s) by at
    least a minute, so a wait that fails ends with helm's own error instead of a killed process."""
    return helm(*args, "--kubeconfig", str(kube.kubeconfig), timeout=HELM_WAIT + 120)


def release_report(kube: Kube) -> str:
    """The release namespace's pods (phase, node, why not Ready) and its latest events, and the real
    node's conditions and allocatable: what a failed `helm --wait` was waiting for."""
    lines = []
    for pod in kube.core_v1.list_namespaced_pod(RELEASE_NAMESPACE).items:
        why = [
            f"{c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason or c.message else "")
            for c in pod.status.conditions or []
            if c.status != "True"
        ]
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting:
                why.append(f"{status.name} waiting: {waiting.reason}: {waiting.message}")
            last = status.last_state.terminated if status.last_state else None
            if last:
                why.append(f"{status.name} last exited {last.exit_code} ({last.reason})")
        lines.append(
            f"pod {pod.metadata.name}: {pod.status.phase} on {pod.spec.node_name}, image {pod.spec.containers[0].image}"
            + (", deleting" if pod.metadata.deletion_timestamp else "")
            + (f"; {'; '.join(why)}" if why else "")
        )
    events = sorted(
        kube.core_v1.list_namespaced_event(RELEASE_NAMESPACE).items,
        key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp),
    )
    lines += [
        f"event {e.last_timestamp or e.event_time} {e.type} {e.reason} {e.involved_object.kind}/"
        f"{e.involved_object.name}: {e.message}"
        for e in events[-25:]
    ]
    node = kube.core_v1.read_node(realnode.NODE_NAME)
    lines.append(f"{realnode.NODE_NAME} allocatable: {node.status.allocatable}")
    lines += [f"{realnode.NODE_NAME} {c.type}={c.status} ({c.reason})" for c in node.status.conditions or []]
    lines.append(f"{realnode.NODE_NAME} taints: {node.spec.taints}")
    on_node = kube.core_v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={realnode.NODE_NAME}").items
    lines += [f"on {realnode.NODE_NAME}: {p.metadata.namespace}/{p.metadata.name} {p.status.phase}" for p in on_node]
    return "\n".join(lines)


def release_helm(kube: Kube, *args: str) -> None:
    """`helm *args --wait` on the release; when it fails, the error says what the release's pods and
    the real node looked like."""
    result = helm(*args, "--kubeconfig", str(kube.kubeconfig), check=False, timeout=HELM_WAIT + 120)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}\n{release_report(kube)}")


def values(image: str) -> list[str]:
    """The release's values: `image` (imported into the real node), its pod on the real node."""
    repository, tag = image.split(":")
    return [
        "--set", f"image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set-string", f"nodeSelector.kubernetes\\.io/hostname={realnode.NODE_NAME}",
        "--set", "operator.resyncSeconds=1,resources.requests.cpu=10m",
    ]  # fmt: skip


@pytest.fixture
def release(kube: Kube, previous_source: Path, previous_image: str) -> Iterator[None]:
    """The older commit's operator chart installed (its CRDs, RBAC, and its operator on the real node),
    uninstalled after the test's namespace is emptied (the operator holds finalizers); the current
    CRDs are put back, as other modules apply them."""
    for name in SOUNDMIND_CRDS:  # applied by kubectl earlier in the session: Helm adopts them so
        if kube.kubectl("get", "crd", name, check=False).returncode == 0:
            kube.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
            kube.kubectl(
                "annotate", "--overwrite", "crd", name,
                f"meta.helm.sh/release-name={RELEASE}", f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}",
            )  # fmt: skip
    build_dependencies()  # this checkout's chart, which the upgrade installs
    release_helm(
        kube, "install", RELEASE, str(previous_source / "charts" / "soundmind-operator"),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace", *values(previous_image), "--wait", "--timeout", "180s",
    )  # fmt: skip
    yield
    kube_helm(kube, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", f"{HELM_WAIT}s")
    kube.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)
    op.install_crds(kube)


@pytest.fixture
def volumes(kube: Kube, namespace: str, release, real_and_kwok_pool) -> Iterator[str]:
    yield from op.with_volumes(kube, namespace)


def operator_pod(kube: Kube, other_than: str | None = None) -> str | None:
    """The name of the release's Ready operator pod (not `other_than`), if there is one."""
    pods = kube.core_v1.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=f"app.kubernetes.io/instance={RELEASE}")
    for pod in pods.items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and not pod.metadata.deletion_timestamp and pod.metadata.name != other_than:
            return pod.metadata.name
    return None


def reconciled(kube: Kube, pod: str, ns: str) -> int:
    """How many objects of `ns` the operator in `pod` has recorded a pass of: each has its series then."""
    try:
        text = kube.core_v1.connect_get_namespaced_pod_proxy_with_path(f"{pod}:9090", RELEASE_NAMESPACE, "metrics")
    except ApiException:
        return 0  # not serving yet
    per_object = (f"{metrics.TRAINING_GPUS_REQUESTED}{{", f"{metrics.SERVING_REPLICAS_DESIRED}{{")
    return sum(1 for line in text.splitlines() if line.startswith(per_object) and f'namespace="{ns}"' in line)


def hand_over(kube: Kube, ns: str, objects: int, *helm_args: str) -> float:
    """Run `helm *helm_args` (an upgrade or a rollback that replaces the operator pod); the seconds from
    its start until a new operator pod has reconciled all `objects`."""
    old = operator_pod(kube)
    assert old, "no Ready operator pod before the hand-over"
    began = time.monotonic()
    release_helm(kube, *helm_args, "--namespace", RELEASE_NAMESPACE)
    new = wait_for(lambda: operator_pod(kube, other_than=old), timeout=RECONCILED_WITHIN, what="a new operator pod")
    wait_for(
        lambda: reconciled(kube, new, ns) == objects,
        timeout=max(1.0, RECONCILED_WITHIN - (time.monotonic() - began)),
        interval=0.5,
        what=f"all {objects} objects reconciled by operator pod {new} within {RECONCILED_WITHIN:.0f} s",
    )
    return time.monotonic() - began


def serving(kube: Kube, ns: str, name: str, **spec) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SERVING.kind,
        "metadata": {"name": name},
        "spec": {"image": SERVER_IMAGE, "model": "Qwen/Qwen2.5-Omni-7B", "resources": {"cpu": "1", "memory": "1Gi"}}
        | spec,
    }
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, body)


def statuses(kube: Kube, ns: str, kind) -> dict[str, dict]:
    found = kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, ns, kind.plural)["items"]
    return {o["metadata"]["name"]: o.get("status") or {} for o in found}


def other_children(kube: Kube, ns: str) -> dict[str, str]:
    """`Kind/name` -> uid of the operator's children that are neither pods, ReplicaSets nor Jobs."""
    served = kube.kubectl("api-resources", "-o", "name").stdout.split()
    kinds = ",".join([OTHER_CHILDREN, *(kind for kind in OPTIONAL_CHILDREN if kind in served)])
    items = json.loads(kube.kubectl("get", kinds, "-n", ns, "-o", "json").stdout)["items"]
    return {
        f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["uid"]
        for i in items
        if i["metadata"].get("ownerReferences")
    }


def state(kube: Kube, ns: str) -> dict:
    """What an upgrade must not disturb."""
    pods = [p for p in kube.core_v1.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]
    deployments = kube.apps_v1.list_namespaced_deployment(ns).items
    return {
        "pods": {p.metadata.name: p.metadata.uid for p in pods},
        "restarts": {p.metadata.name: sum(c.restart_count for c in p.status.container_statuses or []) for p in pods},
        "replicaSets": {r.metadata.name: r.metadata.uid for r in kube.apps_v1.list_namespaced_replica_set(ns).items},
        "jobs": {j.metadata.name: j.metadata.uid for j in kube.batch_v1.list_namespaced_job(ns).items},
        "children": other_children(kube, ns),
        "stamped": {
            d.metadata.name: children.POD_INPUTS_ANNOTATION in (d.metadata.annotations or {}) for d in deployments
        },
        TRAINING.kind: statuses(kube, ns, TRAINING),
        SERVING.kind: statuses(kube, ns, SERVING),
    }


def lost_or_set_back(kind: str, before: dict, after: dict) -> list[str]:
    """Status fields of `before` that `after` lost or set back (GPU-seconds and their time only grow;
    conditions may be added, and each keeps its status)."""
    found = []
    for field, value in before.items():
        now = after.get(field)
        if field in GROWING:
            ok = now is not None and now >= value
        elif field == "conditions":
            kept = {c["type"]: c["status"] for c in now or []}
            ok = all(kept.get(c["type"]) == c["status"] for c in value)
        elif field == "phase":
            order = PHASE_ORDER[kind]
            ok = now in order and order.index(now) >= order.index(value)
        else:
            ok = now == value
        if not ok:
            found.append(f"{field}: {value!r} -> {now!r}")
    return found


def assert_undisturbed(before: dict, after: dict, what: str) -> dict:
    """Nothing replaced, restarted, recreated, lost or set back; the counts of what was kept."""
    assert after["pods"] == before["pods"], f"{what}: pods replaced"
    assert after["restarts"] == before["restarts"], f"{what}: containers restarted"
    assert after["replicaSets"] == before["replicaSets"], f"{what}: a Deployment rolled"
    assert after["jobs"] == before["jobs"], f"{what}: Jobs made or replaced"
    assert after["children"] == before["children"], f"{what}: other children recreated or lost"
    for kind in (TRAINING.kind, SERVING.kind):
        assert set(after[kind]) == set(before[kind])
        for name, status in before[kind].items():
            changed = lost_or_set_back(kind, status, after[kind][name])
            assert not changed, f"{what}: {kind} {name}: {changed}"
    return {
        "pods not replaced or restarted": len(before["pods"]),
        "Jobs not recreated": len(before["jobs"]),
        "ReplicaSets not made": len(before["replicaSets"]),
        "other children kept": len(before["children"]),
        "attempt counters kept": sum(1 for s in before[TRAINING.kind].values() if "attempt" in s),
        "status fields kept": sum(len(s) for kind in (TRAINING.kind, SERVING.kind) for s in before[kind].values()),
    }


def live_objects(kube: Kube, ns: str, trainer_image: str) -> int:
    """20 trainings in every phase and 5 servings with their replicas Ready; how many objects."""
    expected: dict[str, str] = {}  # training -> its phase

    def training(name: str, phase: str, **spec) -> None:
        create_training(kube, ns, name, **spec)
        expected[name] = phase

    # First, and placed before anything else asks for a GPU: the real node's one GPU is its.
    training("two-nodes", "Running", image=trainer_image, resources={**TWO_NODES, "nodeSelector": {POOL_LABEL: POOL}})
    pods = running_pods(kube, ns, "two-nodes-a1", 2, timeout=90)
    assert sorted(p.spec.node_name == realnode.NODE_NAME for p in pods) == [False, True], "one pod on the real node"
    for i in range(4):
        training(f"running-{i}", "Running", resources=SMALL)
    training("retried", "Running", resources=SMALL, maxRetries=3)  # on its second attempt
    for i in range(3):
        training(f"unplaced-{i}", "Pending", resources=UNPLACEABLE)
    for i in range(2):
        training(f"queued-{i}", "Queued", resources=SMALL, queueName="gpus")
    for i in range(3):
        training(f"suspended-{i}", "Suspended", resources=SMALL, suspend=True)
    for i in range(3):
        training(f"done-{i}", "Succeeded", resources=SMALL)
    training("typo", "Failed", extraArgs=["trainer.totl_epochs=3"])
    training("exhausted", "Failed", resources=SMALL, maxRetries=0)
    training("misconfigured", "Failed", resources=SMALL, maxRetries=3)
    # The trainers' exits, as kwok plays them.
    for name, code in (("retried", 1), ("exhausted", 1), ("misconfigured", EXIT_CONFIG_ERROR)):
        end_pod(kube, ns, driver(running_pods(kube, ns, f"{name}-a1", 1, timeout=60)), code)
    for i in range(3):
        end_pod(kube, ns, driver(running_pods(kube, ns, f"done-{i}-a1", 1, timeout=60)), 0)
    wait_training(kube, ns, "retried", lambda t: (t.get("status") or {}).get("attempt") == 2, "attempt 2", timeout=60)
    running_pods(kube, ns, "retried-a2", 1, timeout=60)
    wait_training(kube, ns, "misconfigured", failed_with("ConfigError"), "Failed/ConfigError", timeout=60)

    # Then the servings, on the GPUs the finished trainings left.
    servings = {  # name -> (spec, replicas Ready)
        "fixed-2": ({"autoscaling": {"enabled": False}, "replicas": 2}, 2),
        "fixed-1": ({"autoscaling": {"enabled": False}, "replicas": 1}, 1),
        "fixed-1b": ({"autoscaling": {"enabled": False}, "replicas": 1}, 1),
        "scaled-3": ({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, 1),
        "scaled-2": ({"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}, 1),
    }
    for name, (spec, _) in servings.items():
        serving(kube, ns, name, **spec)

    for name, phase in expected.items():
        wait_training(kube, ns, name, phase_is(phase), phase, timeout=60)
    for name, (_, replicas) in servings.items():

        def ready(s: dict, n: int = replicas) -> bool:
            return (s.get("status") or {}).get("phase") == "Available" and s["status"].get("readyReplicas") == n

        resources.wait(kube, SERVING, ns, name, ready, f"Available with {replicas} Ready", timeout=60)
    return len(expected) + len(servings)


def phases(found: dict) -> dict[str, int]:
    counted: dict[str, int] = {}
    for kind in (TRAINING.kind, SERVING.kind):
        for status in found[kind].values():
            counted[f"{kind} {status.get('phase')}"] = counted.get(f"{kind} {status.get('phase')}", 0) + 1
    return counted


def test_a_helm_upgrade_and_its_rollback_restart_nothing_and_lose_nothing(
    kube: Kube, volumes: str, trainer_standin: str, figure
):
    ns = volumes
    objects = live_objects(kube, ns, trainer_standin)
    before = state(kube, ns)
    print(f"before the upgrade ({PREVIOUS}'s operator): {phases(before)}")
    assert set(phases(before)) == {f"{TRAINING.kind} {p}" for p in PHASE_ORDER[TRAINING.kind]} | {
        f"{SERVING.kind} Available"
    }
    assert before["stamped"] and not any(before["stamped"].values()), f"{PREVIOUS}'s operator stamps no pod inputs"

    took = hand_over(
        kube, ns, objects, "upgrade", RELEASE, str(OPERATOR_CHART), *values(IMAGES["operator"].tag),
        "--wait", "--timeout", f"{HELM_WAIT}s",
    )  # fmt: skip
    time.sleep(5)  # five resyncs: time for any roll or retry the new operator would wrongly start
    upgraded = state(kube, ns)
    counts = assert_undisturbed(before, upgraded, "upgrade")
    # This checkout's operator took over every Deployment (its stamps) and says whether each serving's
    # replicas run its template: all do, so none was held and none rolled.
    assert all(upgraded["stamped"].values()), upgraded["stamped"]
    for name, status in upgraded[SERVING.kind].items():
        current = resources.condition({"status": status}, children.POD_TEMPLATE_CURRENT)
        assert current.get("status") == "True", f"serving {name}: {current}"
    # A training's Job made by the older operator does not record its pod template: each live
    # training says so (a finished one is no longer reconciled).
    live = {n: s for n, s in upgraded[TRAINING.kind].items() if s["phase"] not in ("Succeeded", "Failed")}
    for name, status in live.items():
        current = resources.condition({"status": status}, children.POD_TEMPLATE_CURRENT)
        assert (current.get("status"), current.get("reason")) == ("Unknown", "NotRecorded"), f"training {name}"
    figure(f"helm upgrade {PREVIOUS} -> this checkout: {objects} objects reconciled {took:.1f} s after its start")
    figure(f"helm upgrade kept: {counts}")

    took = hand_over(kube, ns, objects, "rollback", RELEASE, "1", "--wait", "--timeout", f"{HELM_WAIT}s")
    time.sleep(5)
    counts = assert_undisturbed(upgraded, state(kube, ns), "rollback")
    figure(f"helm rollback this checkout -> {PREVIOUS}: {objects} objects reconciled {took:.1f} s after its start")
    figure(f"helm rollback kept: {counts}")
