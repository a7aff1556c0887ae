"""Our images on a node that runs them for real (the kind-equivalent tier).

On the local cluster that node is its real node (a kubelet on containerd, tests/support/realnode.py),
with the operator and vLLM stand-in images imported from the tarballs `make images` saves; on
SOUNDMIND_TEST_KUBECONFIG's cluster (`make test-kind`) it is a Ready node that kwok does not manage,
into which the images were loaded with `kind load`. Training pods still land on kwok's simulated GPU
nodes. Nothing here is simulated about our own pods:

* the operator runs as a pod from its image, installed by its chart with the chart's RBAC, and
  carries a training through the same lifecycle as the local-process tests; kubelet probes its
  /healthz, its /metrics is read through its Service; deleting its pod mid-burst loses nothing and
  duplicates nothing;
* a trainer-shaped pod (the operator's own pod template for the training, the GPU request taken off,
  the operator image running tests/support/trainer_probe.py) patches its training's status with
  its mounted ServiceAccount token, as the non-root trainer UID, writing to a local PV, reading the
  spec from the mounted ConfigMap, with /dev/shm in memory; and is refused another training;
* a SoundMindServing whose pods run the stand-in image serves through its Service: startup probe,
  readiness and `soundmind eval` for real.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.utils.quantity import parse_quantity

from hack.images.build import IMAGES
from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.cli import main as soundmind
from soundmind.train import contract, preflight
from soundmind_operator.serving import names as serving_names
from tests.conftest import EXTERNAL_KUBECONFIG_ENV
from tests.support import operator as op
from tests.support import resources, sim
from tests.support.autoscaling import prepared_requests
from tests.support.extended_resources import TEST_GPU, advertised
from tests.support.kube import Kube, read_or_none
from tests.support.poll import wait_for
from tests.support.trainings import (
    failed_with,
    jobs,
    one_node_training_lifecycle,
    phase_is,
    wait_training,
)
from tests.unit.charts.helm import OPERATOR_CHART, helm, helm_binary

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_IMAGE, STANDIN_IMAGE = IMAGES["operator"].tag, IMAGES["standin"].tag
RELEASE, RELEASE_NAMESPACE = "in-cluster", "soundmind-in-cluster"
FULLNAME = f"{RELEASE}-soundmind-operator"
HOSTNAME_LABEL = "kubernetes.io/hostname"
RECORDED_VERL_LOG = ROOT / "tests" / "fixtures" / "verl_file_logger.jsonl"
SIMULATED_TRAINER = "registry.invalid/soundmind/trainer:sim"  # its pods land on kwok's nodes: never pulled
SMALL = {"gpusPerNode": 1, "cpu": "4", "memory": "16Gi"}


def create(kube: Kube, kind, namespace: str, name: str, spec: dict) -> dict:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
    return kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, body)


@pytest.fixture(scope="module")
def node(image_node: str) -> str:
    return image_node


@pytest.fixture
def volumes(kube: Kube, namespace: str) -> Iterator[str]:
    """``namespace`` with the claims trainings and servings mount, and its objects gone afterwards."""
    yield from op.with_volumes(kube, namespace)


def kube_helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm(*args, "--kubeconfig", str(kube.kubeconfig), check=check)


def operator_pods(kube: Kube) -> list:
    selector = f"app.kubernetes.io/instance={RELEASE}"
    pods = kube.core_v1.list_namespaced_pod(RELEASE_NAMESPACE, label_selector=selector).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def ready_operator_pod(kube: Kube, other_than: str | None = None, timeout: float = 120):
    def ready():
        for pod in operator_pods(kube):
            conditions = pod.status.conditions or []
            if pod.metadata.name != other_than and any(c.type == "Ready" and c.status == "True" for c in conditions):
                return pod
        return None

    return wait_for(ready, timeout=timeout, what=f"a Ready operator pod in {RELEASE_NAMESPACE}")


@pytest.fixture(scope="module")
def in_cluster_operator(kube: Kube, node: str) -> Iterator[None]:
    """The operator chart installed with the image built here, its pod pinned to ``node``."""
    op.install_crds(kube)  # the CRDs chart is installed by test_charts; here they come as kubectl applies them
    escaped = HOSTNAME_LABEL.replace(".", "\\.")
    repository, tag = OPERATOR_IMAGE.split(":")
    kube_helm(
        kube,
        "install", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", f"crds.enabled=false,image.repository={repository},image.tag={tag},image.pullPolicy=Never",
        "--set-string", f"nodeSelector.{escaped}={node}",
        "--set", "operator.resyncSeconds=2,resources.requests.cpu=10m",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    yield
    pod = (operator_pods(kube) or [None])[0]
    if pod is not None:
        print(f"operator pod log (tail):\n{operator_log(kube, pod.metadata.name)[-3000:]}")
    kube_helm(kube, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)
    kube.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)


def operator_log(kube: Kube, pod: str) -> str:
    return kube.core_v1.read_namespaced_pod_log(pod, RELEASE_NAMESPACE)


def scrape_through_service(kube: Kube) -> str:
    """The operator's /metrics, through its Service (the API server's service proxy to an endpoint)."""
    return kube.core_v1.connect_get_namespaced_service_proxy_with_path(
        f"{FULLNAME}-metrics:metrics", RELEASE_NAMESPACE, "metrics", _preload_content=True
    )


def test_the_operator_pod_reconciles_a_training_through_its_lifecycle(
    kube: Kube, node: str, in_cluster_operator, volumes: str, tmp_path: Path
):
    pod = ready_operator_pod(kube)
    assert pod.spec.node_name == node
    container = pod.spec.containers[0]
    assert container.image.endswith(OPERATOR_IMAGE) and container.liveness_probe.http_get.path == "/healthz"
    assert pod.spec.security_context.run_as_non_root and pod.spec.service_account_name == FULLNAME

    one_node_training_lifecycle(kube, volumes, tmp_path, lambda: scrape_through_service(kube))

    # The kubelet kept probing /healthz all along: the same pod, never restarted, still Ready.
    again = kube.core_v1.read_namespaced_pod(pod.metadata.name, RELEASE_NAMESPACE)
    assert again.status.container_statuses[0].restart_count == 0
    assert again.status.container_statuses[0].ready
    log = operator_log(kube, pod.metadata.name)
    assert "Forbidden" not in log and "Traceback" not in log, log[-3000:]


def test_the_operator_pod_checks_verl_overrides_against_the_schema_in_its_image(
    kube: Kube, node: str, in_cluster_operator, volumes: str
):
    """The image has no verl; the pod composes overrides offline against the schema soundmind ships."""
    spec = {"image": SIMULATED_TRAINER, "extraArgs": ["trainer.val_before_train=False", "trainer.totl_epochs=3"]}
    create(kube, TRAINING, volumes, "typo", spec)
    failed = wait_training(kube, volumes, "typo", failed_with("ConfigError"), "ConfigError", timeout=60)
    assert "extraArgs[1]" in resources.condition(failed, "Failed")["message"]
    assert not jobs(kube, volumes, "typo")


def test_deleting_the_operator_pod_mid_burst_loses_and_duplicates_nothing(
    kube: Kube, node: str, in_cluster_operator, volumes: str, figure
):
    # The twelve fit on the two simulated nodes (8 GPUs, 96 CPUs each) at once. The pod goes once the
    # first Job of the burst exists and before the rest of the burst is created: the operator makes
    # a dozen Jobs within a second or two, so a pod deleted after the whole burst was created went
    # after the burst (12 Jobs before, 0 after, when this test first asserted it).
    count, first_part = 12, 4
    for i in range(first_part):
        create(kube, TRAINING, volumes, f"burst-{i}", {"image": SIMULATED_TRAINER, "resources": SMALL})
    first = ready_operator_pod(kube)
    wait_for(lambda: jobs_of_burst(kube, volumes) >= 1, timeout=60, interval=0.05, what="the first Job of the burst")
    kube.core_v1.delete_namespaced_pod(first.metadata.name, RELEASE_NAMESPACE, grace_period_seconds=0)
    for i in range(first_part, count):
        create(kube, TRAINING, volumes, f"burst-{i}", {"image": SIMULATED_TRAINER, "resources": SMALL})
    replacement = ready_operator_pod(kube, other_than=first.metadata.name, timeout=180)
    assert replacement.spec.node_name == node

    for i in range(count):
        wait_training(kube, volumes, f"burst-{i}", phase_is("Running"), "Running", timeout=120)
    made = []
    for i in range(count):
        (job,) = jobs(kube, volumes, f"burst-{i}")  # exactly one Job: nothing duplicated by the new pod
        assert job.metadata.name == f"burst-{i}-a1"
        assert resources.get(kube, TRAINING, volumes, f"burst-{i}")["status"]["attempt"] == 1
        made.append(job.metadata.creation_timestamp)
    # The pod went mid-burst, as test_faults' kills must happen: some Jobs were made by the replacement,
    # after its container started (the deleted pod's container was gone by then).
    started = replacement.status.container_statuses[0].state.running.started_at
    by_replacement = [made_at for made_at in made if made_at > started]
    figure(f"operator pod deleted mid-burst: {count - len(by_replacement)} Jobs before, {len(by_replacement)} after")
    assert by_replacement, f"all {count} Jobs existed before the replacement started ({started}): nothing was left"


# A lease-based controller's hand-over (15 s lease) is what users compare an upgrade's gap with.
LEASE_HANDOVER_SECONDS = 15


def test_a_helm_upgrade_leaves_no_operator_for_less_than_a_lease_hand_over(
    kube: Kube, node: str, in_cluster_operator, figure
):
    """`helm upgrade` with a new pod template: the Recreate strategy ends the old pod before the new
    one starts. The window is from the last moment the old pod was seen Ready (not terminating) to
    the first moment the new one is, polled every 0.1 s."""
    old = ready_operator_pod(kube)
    upgrade = subprocess.Popen(
        [
            helm_binary(),
            "--kubeconfig", str(kube.kubeconfig),
            "upgrade", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values",
            "--set", "operator.resyncSeconds=3",
        ]
    )  # fmt: skip
    last_old = time.monotonic()
    try:
        while True:
            pods = operator_pods(kube)
            if any(p.metadata.name == old.metadata.name and ready(p) for p in pods):
                last_old = time.monotonic()
            elif any(p.metadata.name != old.metadata.name and ready(p) for p in pods):
                window = time.monotonic() - last_old
                break
            assert time.monotonic() - last_old < 180, "no new operator pod Ready within 180 s"
            time.sleep(0.1)
    finally:
        assert upgrade.wait(timeout=180) == 0
    figure(f"helm upgrade: no operator pod Ready for {window:.1f} s (Recreate)")
    assert window < LEASE_HANDOVER_SECONDS, f"{window:.1f} s without an operator"


def ready(pod) -> bool:
    return not pod.metadata.deletion_timestamp and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
    )


def jobs_of_burst(kube: Kube, namespace: str) -> int:
    return len(kube.batch_v1.list_namespaced_job(namespace).items)


# -- a trainer-shaped pod ----------------------------------------------------------------------


@contextlib.contextmanager
def local_volume(kube: Kube, node: str, namespace: str, claim: str) -> Iterator[None]:
    """Claim ``claim`` bound to a local PersistentVolume on ``node``: a directory the kubelet creates
    (root's, mode 0755) and that a pod's fsGroup then makes writable, as on a real cluster."""
    volume = f"{namespace}-{claim}"
    path = f"/var/tmp/soundmind-test/{volume}"
    make_directory = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"mkdir-{claim}"},
        "spec": {
            "nodeSelector": {HOSTNAME_LABEL: node},
            "restartPolicy": "Never",
            "containers": [
                {"name": "mkdir", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never", "command": ["true"],
                 "volumeMounts": [{"name": "dir", "mountPath": "/dir"}]}
            ],
            "volumes": [{"name": "dir", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}],
        },
    }  # fmt: skip
    kube.core_v1.create_namespaced_pod(namespace, make_directory)
    wait_for(
        lambda: kube.core_v1.read_namespaced_pod(f"mkdir-{claim}", namespace).status.phase == "Succeeded",
        timeout=60,
        what=f"the kubelet creating {path} on {node}",
    )
    on_node = {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}
    source = {"local": {"path": path}, "nodeAffinity": {"required": {"nodeSelectorTerms": [on_node]}}}
    op.bind_claim(kube, namespace, claim, source, "ReadWriteOnce", "1Gi", reclaim="Retain")
    try:
        yield
    finally:
        kube.core_v1.delete_persistent_volume(volume)
        if not os.environ.get(EXTERNAL_KUBECONFIG_ENV):  # the real node's files are this machine's
            shutil.rmtree(path)


def trainer_shaped_pod(template: dict, node: str, probe_config_map: str) -> dict:
    """The Job's pod template as the operator built it, with the GPU request taken off (the node has
    none), pinned to ``node``, and the operator image running the probe in place of `soundmind train`."""
    pod = copy.deepcopy(template)
    spec = pod["spec"]
    spec["nodeSelector"] = {HOSTNAME_LABEL: node}
    spec.pop("affinity", None)
    spec.pop("schedulingGroup", None)
    spec["restartPolicy"] = "Never"
    container = next(c for c in spec["containers"] if c["name"] == contract.CONTAINER_NAME)
    spec["containers"] = [container]
    container.update(image=OPERATOR_IMAGE, imagePullPolicy="Never")
    container["command"] = ["python", "/probe/trainer_probe.py", "/probe/verl.jsonl", "someone-else"]
    container.pop("args", None)
    container.pop("ports", None)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        container.pop(probe, None)
    for kind in ("requests", "limits"):
        container.get("resources", {}).get(kind, {}).pop(sim.GPU_RESOURCE, None)
    container["resources"]["requests"].update(cpu="10m", memory="128Mi")
    container["resources"].get("limits", {}).update(memory="512Mi")
    container["env"] = [e for e in container.get("env", []) if e["name"] != "JOB_COMPLETION_INDEX"]
    container["env"].append({"name": "JOB_COMPLETION_INDEX", "value": "0"})
    container.setdefault("volumeMounts", []).append({"name": "probe", "mountPath": "/probe", "readOnly": True})
    spec["volumes"].append({"name": "probe", "configMap": {"name": probe_config_map}})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer-probe", "labels": {}}, "spec": spec}


def test_a_trainer_shaped_pod_reports_progress_with_its_own_mounted_token(
    kube: Kube, node: str, in_cluster_operator, namespace: str
):
    ns = namespace
    with contextlib.ExitStack() as volumes_on_node:
        for claim in op.DEFAULT_CLAIMS:
            volumes_on_node.enter_context(local_volume(kube, node, ns, claim))
        for name in ("probe", "someone-else"):  # suspended: the Job exists, no pod of its own competes
            create(kube, TRAINING, ns, name, {"image": SIMULATED_TRAINER, "suspend": True})
        job = wait_for(
            lambda: read_or_none(lambda: kube.batch_v1.read_namespaced_job("probe-a1", ns)),
            timeout=60,
            what="the operator's Job for training probe",
        )
        template = kube.api_client.sanitize_for_serialization(job.spec.template)
        probe_files = {
            "trainer_probe.py": (ROOT / "tests" / "support" / "trainer_probe.py").read_text(),
            "verl.jsonl": RECORDED_VERL_LOG.read_text(),
        }
        kube.core_v1.create_namespaced_config_map(ns, {"metadata": {"name": "trainer-probe"}, "data": probe_files})
        kube.core_v1.create_namespaced_pod(ns, trainer_shaped_pod(template, node, "trainer-probe"))

        def ended():
            pod = kube.core_v1.read_namespaced_pod("trainer-probe", ns)
            return pod if pod.status.phase in ("Succeeded", "Failed") else None

        pod = wait_for(ended, timeout=120, what="the trainer-shaped pod to finish")
        log = kube.core_v1.read_namespaced_pod_log("trainer-probe", ns)
        assert pod.status.phase == "Succeeded", log
        found = json.loads(log.strip().splitlines()[-1])

        assert found["uid"] == contract.TRAINER_UID and found["log_owner"] == contract.TRAINER_UID
        assert found["training"] == "probe" and found["attempt"] == 1
        # the spec came from the mounted ConfigMap the operator wrote
        assert found["modality"] == TrainingSpec.model_validate({"image": SIMULATED_TRAINER}).dataset.modality
        assert found["log"].startswith(f"{contract.CHECKPOINTS_MOUNT}/")
        assert found["shm_is_tmpfs"] and found["patched"]
        # The preflight in a real pod: the node named by the downward API, and /dev/shm as the kubelet
        # sizes a memory-backed volume (the smaller of its sizeLimit, shmSize, and the pod's memory limit).
        assert found["node"] == node
        shm_size = TrainingSpec.model_validate({"image": SIMULATED_TRAINER}).resources.shm_size
        limit = pod.spec.containers[0].resources.limits["memory"]
        assert found["shm_bytes"] == min(parse_quantity(shm_size), parse_quantity(limit))
        shm_problem = f"/dev/shm is {preflight.size_text(found['shm_bytes'])}, resources.shmSize is {shm_size}"
        assert any(problem.startswith(shm_problem) for problem in found["preflight"]), found["preflight"]
        assert found["other_training"] == 403  # its Role names its own training only
        status = resources.get(kube, TRAINING, ns, "probe")["status"]
        last = json.loads(RECORDED_VERL_LOG.read_text().splitlines()[-1])["step"]
        assert status["progress"]["step"] == last
        assert status["checkpoint"] == {"step": last, "path": f"{contract.checkpoint_dir('probe')}/global_step_{last}"}
        assert "progress" not in (resources.get(kube, TRAINING, ns, "someone-else").get("status") or {})
        kube.core_v1.delete_namespaced_pod("trainer-probe", ns, grace_period_seconds=0)


# -- a serving whose pods really serve ---------------------------------------------------------


@contextlib.contextmanager
def service_endpoint(kube: Kube, namespace: str, service: str, port: int) -> Iterator[str]:
    """A base URL reaching ``service`` through its ClusterIP: directly on the local cluster (the host
    routes its Service range to the real node, where kube-proxy answers); on another cluster (kind)
    through `kubectl port-forward`, the only way in from outside."""
    if not os.environ.get(EXTERNAL_KUBECONFIG_ENV):
        cluster_ip = kube.core_v1.read_namespaced_service(service, namespace).spec.cluster_ip
        yield f"http://{cluster_ip}:{port}"
        return
    forward = subprocess.Popen(
        [str(kube.kubectl_path), "--kubeconfig", str(kube.kubeconfig), "-n", namespace,
         "port-forward", f"service/{service}", f":{port}"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = forward.stdout.readline()
        local = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert local, f"kubectl port-forward said {line!r}"
        yield f"http://127.0.0.1:{local.group(1)}"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_a_serving_of_the_stand_in_image_serves_soundmind_eval_through_its_service(
    kube: Kube, node: str, in_cluster_operator, volumes: str, tmp_path: Path
):
    ns = volumes
    served = "soundmind"
    spec = {
        "model": "Qwen/Qwen2.5-Omni-7B",
        "servedModelName": served,
        "image": STANDIN_IMAGE,
        "autoscaling": {"enabled": False},
        "replicas": 1,
        "resources": {"gpuResource": TEST_GPU, "cpu": "100m", "memory": "512Mi", "shmSize": "64Mi",
                      "nodeSelector": {HOSTNAME_LABEL: node}},
        "startupTimeoutSeconds": 120,
    }  # fmt: skip
    with advertised(kube, node, 1):
        create(kube, SERVING, ns, "standin", spec)
        available = resources.wait(
            kube, SERVING, ns, "standin", lambda s: (s.get("status") or {}).get("phase") == "Available",
            "Available", timeout=180,
        )  # fmt: skip
        assert available["status"]["readyReplicas"] == 1
        assert kube.apps_v1.read_namespaced_deployment(serving_names.deployment("standin"), ns).spec.replicas == 1
        (pod,) = kube.core_v1.list_namespaced_pod(ns, label_selector=serving_names.selector("standin")).items
        assert pod.spec.node_name == node
        server = pod.spec.containers[0]
        assert server.startup_probe.http_get.path == "/health"
        assert pod.status.container_statuses[0].ready and pod.status.container_statuses[0].started
        # The kubelet ran the startup probe against the real process: started, then Ready, no restart.
        assert pod.status.container_statuses[0].restart_count == 0

        parquet, _ = prepared_requests(tmp_path / "data", served)
        report_path = tmp_path / "report.json"
        with service_endpoint(kube, ns, serving_names.service("standin"), 8000) as endpoint:
            argv = ["eval", "--endpoint", endpoint, "--model", served, "--data", str(parquet)]
            assert soundmind([*argv, "--report", str(report_path), "--concurrency", "2"]) == 0
        report = json.loads(report_path.read_text())
        assert report["complete"] and report["requests"]["answered"] == 8 and report["format_rate"] == 1.0
        print(f"soundmind eval via the Service {endpoint}: {report['requests']['answered']} answered")
        kube.custom_objects.delete_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, "standin")
        wait_for(
            lambda: not kube.core_v1.list_namespaced_pod(ns, label_selector=serving_names.selector("standin")).items,
            timeout=60,
            what="the stand-in's pods gone",
        )
