"""soundmind-operator on the local control plane (two simulated 8-GPU nodes).

The API server, scheduler, controllers (Job, garbage collector), RBAC and the operator are real;
kwok plays the kubelets. The operator runs as its own ServiceAccount with exactly the committed
RBAC (config/rbac/), so a missing permission fails here. Pods are steered through
tests/support/sim.py's annotations: patching `sim.soundmind.ai/exit-code` onto a live pod ends it
with that code, as the trainer would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import kopf
import pytest
import yaml

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.train.contract import EXIT_CONFIG_ERROR
from soundmind_operator import metrics
from soundmind_operator.training import builders, names
from tests.support import operator as op
from tests.support.kube import Kube, exists, read_or_none
from tests.support.poll import wait_for
from tests.support.trainings import (
    condition,
    create_training,
    driver,
    end_pod,
    events_of,
    failed_with,
    get_training,
    jobs,
    one_node_training_lifecycle,
    patch_spec,
    phase_is,
    running_pods,
    training_manifest,
    wait_training,
)

pytestmark = pytest.mark.integration

KUEUE_MODULE = "sigs.k8s.io/kueue@v0.17.0"


# -- admission --------------------------------------------------------------------------------


BAD_SPECS = [
    ({"resources": {"nodes": 0}}, "spec.resources.nodes"),
    ({"resources": {"gpusPerNode": 17}}, "spec.resources.gpusPerNode"),
    ({"dataset": {"modality": "video"}}, "spec.dataset.modality"),
    ({"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ({"algorithm": {"learningRate": 0}}, "spec.algorithm.learningRate"),
    ({"algorithm": {"trainBatchSize": 3, "rolloutN": 1}}, "spec.algorithm.trainBatchSize"),
    ({"rewards": {"answerWeight": 2}}, 'unknown field "spec.rewards"'),
    ({"hfTokenSecret": {"key": "token"}}, "spec.hfTokenSecret.name"),
    ({"maxRetries": -1}, "spec.maxRetries"),
]


def kubectl_apply(kube: Kube, tmp_path: Path, manifest: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return kube.kubectl("apply", "-f", str(path), check=False)


def test_bad_specs_are_rejected_at_admission_naming_the_field(kube: Kube, namespace: str, tmp_path: Path):
    op.install_crds(kube)
    refused = {}
    for index, (spec, field) in enumerate(BAD_SPECS):
        manifest = training_manifest(f"bad-{index}", **spec)
        manifest["metadata"]["namespace"] = namespace
        result = kubectl_apply(kube, tmp_path, manifest)
        refused[field] = (result.returncode, result.stderr)
    for name, field in [("x" * (names.MAX_TRAINING_NAME_LENGTH + 1), "metadata.name"), ("7up", "metadata.name")]:
        manifest = {**training_manifest(name), "metadata": {"name": name, "namespace": namespace}}
        result = kubectl_apply(kube, tmp_path, manifest)
        refused[f"{field} {name[:8]}"] = (result.returncode, result.stderr)
        assert result.returncode != 0 and field in result.stderr, result.stderr

    good = {**training_manifest("good", suspend=True), "metadata": {"name": "good", "namespace": namespace}}
    assert kubectl_apply(kube, tmp_path, good).returncode == 0
    changed = {**good, "spec": {**good["spec"], "model": "Qwen/Qwen2-Audio-7B"}}
    result = kubectl_apply(kube, tmp_path, changed)
    assert result.returncode != 0 and "spec.model is immutable" in result.stderr, result.stderr
    resumed = {**good, "spec": {**good["spec"], "suspend": False, "maxRetries": 5}}  # mutable fields may change
    assert kubectl_apply(kube, tmp_path, resumed).returncode == 0

    for example in sorted((op.ROOT / "examples").glob("training*.yaml")):
        dry_run = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False)
        assert dry_run.returncode == 0, f"{example.name}: {dry_run.stderr}"

    wrong = {field: err for field, (code, err) in refused.items() if code == 0 or field.split()[0] not in err}
    assert not wrong, "accepted, or refused without naming the field:\n" + "\n".join(
        f"{k}: {v}" for k, v in wrong.items()
    )


# -- lifecycle --------------------------------------------------------------------------------


def test_one_node_training_runs_reports_progress_and_succeeds(
    kube: Kube, ns: str, operator: op.OperatorProcess, tmp_path: Path
):
    one_node_training_lifecycle(kube, ns, tmp_path, operator.metrics)


def api_calls(operator: op.OperatorProcess) -> tuple[float, float]:
    """(API requests of reconcile passes, reconcile passes) so far, from the operator's metrics."""
    requests = passes = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith(metrics.API_REQUESTS + "{"):
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith(metrics.RECONCILE_TOTAL + "{"):
            passes += float(line.rsplit(" ", 1)[1])
    return requests, passes


def test_a_finished_training_makes_no_api_calls(kube: Kube, ns: str, operator: op.OperatorProcess):
    """Its loop waits for a change instead of re-reading the training every resync (1 s here)."""
    create_training(kube, ns, "quiet")
    wait_training(kube, ns, "quiet", phase_is("Running"), "Running")
    (pod,) = running_pods(kube, ns, "quiet-a1", 1)
    end_pod(kube, ns, pod, 0)
    wait_training(kube, ns, "quiet", phase_is("Succeeded"), "Succeeded")
    # Only this training left in the cluster (earlier tests' namespaces may still be terminating).
    wait_for(
        lambda: (
            [
                t["metadata"]["name"]
                for t in kube.custom_objects.list_cluster_custom_object(GROUP, VERSION, TRAINING.plural)["items"]
            ]
            == ["quiet"]
        ),
        timeout=60,
        what="no training but this one",
    )
    time.sleep(3)  # the pass that saw it finish, and the Job's last events
    before = api_calls(operator)
    assert before[0] > 0, "the operator's API requests are counted"
    time.sleep(60)
    after = api_calls(operator)
    print(
        f"a finished training, 60 s at a 1 s resync: {after[0] - before[0]:.0f} API requests, "
        f"{after[1] - before[1]:.0f} passes"
    )
    assert after == before

    # A change to it wakes it again (one pass), and it settles again.
    patch_spec(kube, ns, "quiet", maxRetries=5)
    wait_for(lambda: api_calls(operator)[1] > after[1], timeout=15, what="a pass after the change")


def test_deleted_children_of_a_running_training_are_restored(kube: Kube, ns: str):
    create_training(kube, ns, "alr", resources={"nodes": 2})
    wait_training(kube, ns, "alr", phase_is("Running"), "Running")
    kube.rbac_v1.delete_namespaced_role(names.role("alr"), ns)
    kube.core_v1.delete_namespaced_service(names.headless_service("alr"), ns)
    wait_for(
        lambda: (
            exists(lambda: kube.rbac_v1.read_namespaced_role(names.role("alr"), ns))
            and exists(lambda: kube.core_v1.read_namespaced_service(names.headless_service("alr"), ns))
        ),
        timeout=15,
        what="the Role and the headless Service restored",
    )
    role = kube.rbac_v1.read_namespaced_role(names.role("alr"), ns)
    assert role.metadata.owner_references[0].name == "alr"
    assert [j.metadata.name for j in jobs(kube, ns, "alr")] == ["alr-a1"], "the Job is left alone"


def test_a_bad_verl_override_is_a_config_error_before_any_job(kube: Kube, ns: str):
    create_training(kube, ns, "typo", extraArgs=["trainer.val_before_train=False", "trainer.totl_epochs=3"])
    failed = wait_training(kube, ns, "typo", failed_with("ConfigError"), "ConfigError")
    message = condition(failed, "Failed")["message"]
    assert "extraArgs[1]" in message and "trainer.totl_epochs" in message, message
    assert not jobs(kube, ns, "typo") and not kube.core_v1.list_namespaced_pod(ns).items


def test_two_node_training_spreads_over_both_nodes_and_is_garbage_collected(kube: Kube, ns: str):
    create_training(kube, ns, "multi", resources={"nodes": 2})
    wait_training(kube, ns, "multi", phase_is("Running"), "Running")
    pods = running_pods(kube, ns, "multi-a1", 2)
    assert len({p.spec.node_name for p in pods}) == 2, [p.spec.node_name for p in pods]
    assert {p.spec.subdomain for p in pods} == {"multi-ray"}
    service = kube.core_v1.read_namespaced_service(names.headless_service("multi"), ns)
    assert service.spec.cluster_ip == "None"
    head = next(e.value for e in driver(pods).spec.containers[0].env if e.name == "SOUNDMIND_HEAD_ADDRESS")
    assert head == f"multi-a1-0.multi-ray.{ns}.svc"

    kube.custom_objects.delete_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, "multi")

    def children_left():
        selector = names.selector("multi")
        found = [
            *kube.batch_v1.list_namespaced_job(ns, label_selector=selector).items,
            *kube.core_v1.list_namespaced_pod(ns, label_selector=selector).items,
            *kube.core_v1.list_namespaced_config_map(ns, label_selector=selector).items,
            *kube.core_v1.list_namespaced_service(ns, label_selector=selector).items,
            *kube.core_v1.list_namespaced_service_account(ns, label_selector=selector).items,
            *kube.rbac_v1.list_namespaced_role(ns, label_selector=selector).items,
            *kube.rbac_v1.list_namespaced_role_binding(ns, label_selector=selector).items,
        ]
        return [f"{o.kind or type(o).__name__}/{o.metadata.name}" for o in found]

    wait_for(lambda: not children_left(), timeout=60, what="the garbage collector removing the children")


def test_three_nodes_on_two_are_unschedulable_then_pending_timeout(kube: Kube, ns: str):
    create_training(kube, ns, "big", resources={"nodes": 3}, algorithm={"trainBatchSize": 24}, pendingTimeoutSeconds=6)
    waiting = wait_training(
        kube, ns, "big", lambda t: condition(t, "Schedulable").get("status") == "False", "Schedulable=False"
    )
    # The scheduler's own words: about the whole PodGroup where Kubernetes' gang scheduling is on;
    # else about each pod and every node of the cluster (the two simulated GPU nodes, and on a kind
    # cluster or with the local real node, that node too: none of them has room).
    nodes = len(kube.core_v1.list_node().items)
    said = (f"0/{nodes} nodes are available", "minCount (3) cannot be satisfied")
    message = condition(waiting, "Schedulable")["message"]
    assert any(words in message for words in said), message
    assert waiting["status"]["phase"] == "Pending"

    failed = wait_training(kube, ns, "big", failed_with("PendingTimeout"), "Failed/PendingTimeout")
    assert any(words in condition(failed, "Failed")["message"] for words in said)
    wait_for(lambda: not jobs(kube, ns, "big"), timeout=30, what="the Job deleted, its GPUs freed")


def test_driver_failure_is_retried_then_backoff_limit_exceeded(kube: Kube, ns: str, operator: op.OperatorProcess):
    create_training(kube, ns, "flaky", maxRetries=1)
    wait_training(kube, ns, "flaky", phase_is("Running"), "Running")
    end_pod(kube, ns, driver(running_pods(kube, ns, "flaky-a1", 1)), 1, "NCCL error: unhandled system error")

    second = wait_training(kube, ns, "flaky", lambda t: t["status"].get("attempt") == 2, "attempt 2")
    assert second["status"]["jobName"] == "flaky-a2"
    # Events are posted after the status patch that they describe, so wait for it.
    retrying = wait_for(
        lambda: [e for e in events_of(kube, ns, "flaky") if e.reason == "Retrying"], what="a Retrying event"
    )
    assert "NCCL error" in retrying[0].message and retrying[0].type == "Warning"
    pods = running_pods(kube, ns, "flaky-a2", 1)
    env = {e.name: e.value for e in pods[0].spec.containers[0].env}
    assert env["SOUNDMIND_ATTEMPT"] == "2"
    wait_for(lambda: [j.metadata.name for j in jobs(kube, ns, "flaky")] == ["flaky-a2"], what="attempt 1's Job gone")

    end_pod(kube, ns, driver(pods), 1)
    failed = wait_training(kube, ns, "flaky", failed_with("BackoffLimitExceeded"), "Failed/BackoffLimitExceeded")
    assert failed["status"]["attempt"] == 2
    assert f'{metrics.TRAINING_RETRIES}{{namespace="{ns}",training="flaky"}} 1.0' in operator.metrics()


def test_config_error_fails_without_retry_and_the_job_expires(kube: Kube, ns: str):
    create_training(kube, ns, "badcfg", maxRetries=3, ttlSecondsAfterFinished=2)
    wait_training(kube, ns, "badcfg", phase_is("Running"), "Running")
    end_pod(kube, ns, driver(running_pods(kube, ns, "badcfg-a1", 1)), EXIT_CONFIG_ERROR, "extraArgs: unknown key x")

    failed = wait_training(kube, ns, "badcfg", failed_with("ConfigError"), "Failed/ConfigError")
    assert failed["status"]["attempt"] == 1
    assert "exited 78" in condition(failed, "Failed")["message"]
    assert "unknown key x" in condition(failed, "Failed")["message"]
    assert [j.metadata.name for j in jobs(kube, ns, "badcfg")] == ["badcfg-a1"]
    # ttlSecondsAfterFinished removes the finished Job; the training stays Failed, nothing is retried.
    wait_for(lambda: not jobs(kube, ns, "badcfg"), timeout=30, what="the TTL controller deleting the Job")
    assert get_training(kube, ns, "badcfg")["status"]["phase"] == "Failed"
    assert not jobs(kube, ns, "badcfg")


def test_active_deadline_fails_the_run(kube: Kube, ns: str):
    create_training(kube, ns, "slow", activeDeadlineSeconds=2, maxRetries=3)
    job = wait_for(lambda: read_or_none(lambda: kube.batch_v1.read_namespaced_job("slow-a1", ns)), what="Job slow-a1")
    assert job.spec.active_deadline_seconds == 2
    failed = wait_training(kube, ns, "slow", failed_with("DeadlineExceeded"), "Failed/DeadlineExceeded")
    assert failed["status"]["attempt"] == 1 and "activeDeadlineSeconds=2" in condition(failed, "Failed")["message"]


def test_suspend_removes_the_pods_and_resume_brings_them_back(kube: Kube, ns: str):
    create_training(kube, ns, "pausable")
    wait_training(kube, ns, "pausable", phase_is("Running"), "Running")
    running_pods(kube, ns, "pausable-a1", 1)

    patch_spec(kube, ns, "pausable", suspend=True)
    wait_training(kube, ns, "pausable", phase_is("Suspended"), "Suspended")
    assert kube.batch_v1.read_namespaced_job("pausable-a1", ns).spec.suspend is True
    running_pods(kube, ns, "pausable-a1", 0)

    patch_spec(kube, ns, "pausable", suspend=False)
    resumed = wait_training(kube, ns, "pausable", phase_is("Running"), "Running again")
    assert resumed["status"]["attempt"] == 1, "resuming is not a retry"
    running_pods(kube, ns, "pausable-a1", 1)


# -- Kueue ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kueue_crds(kube: Kube) -> list[str]:
    """Kueue's real CRDs, from the sigs.k8s.io/kueue Go module (downloaded through the module proxy
    into the Go module cache; nothing is committed)."""
    try:
        downloaded = subprocess.run(
            ["go", "mod", "download", "-json", KUEUE_MODULE], capture_output=True, text=True, timeout=300
        )
    except FileNotFoundError:
        pytest.fail("no Go toolchain to fetch Kueue's CRDs with (make tools needs one too)")
    if downloaded.returncode != 0:
        pytest.fail(f"go mod download {KUEUE_MODULE} failed:\n{downloaded.stdout}\n{downloaded.stderr}")
    module_dir = Path(json.loads(downloaded.stdout)["Dir"])
    return op.install_crds(kube, module_dir / "config" / "components" / "crd" / "bases")


def test_kueue_queue_holds_the_job_until_admitted(
    kube: Kube, ns: str, kueue_crds: list[str], operator: op.OperatorProcess
):
    assert "workloads.kueue.x-k8s.io" in kueue_crds
    # The operator finds Kueue's API version once, at start-up (no 404 on every pass): restart it.
    operator.stop()
    operator.start()
    kueue = ("kueue.x-k8s.io", "v1beta2")
    kube.custom_objects.create_namespaced_custom_object(
        *kueue,
        ns,
        "localqueues",
        {
            "apiVersion": "/".join(kueue),
            "kind": "LocalQueue",
            "metadata": {"name": "gpus"},
            "spec": {"clusterQueue": "gpu-cluster-queue"},
        },
    )
    create_training(kube, ns, "queued", queueName="gpus")
    queued = wait_training(kube, ns, "queued", phase_is("Queued"), "Queued")
    assert condition(queued, "Schedulable")["reason"] == "WaitingForKueue"
    # Kueue's admission is the group's all-or-nothing placement: no PodGroup, even where served.
    assert queued["status"]["gang"] == "Kueue"
    (job,) = jobs(kube, ns, "queued")
    assert job.spec.suspend is True and job.metadata.labels[names.KUEUE_QUEUE_LABEL] == "gpus"
    assert job.spec.template.spec.scheduling_group is None
    groups = kube.request("GET", f"/apis/scheduling.k8s.io/v1beta1/namespaces/{ns}/podgroups")
    assert groups[0] == 404 or b'"items":[]' in groups[1], groups

    # What Kueue does: a Workload owned by the Job, saying why it is not admitted yet ...
    template = kube.api_client.sanitize_for_serialization(job.spec.template)
    workload = kube.custom_objects.create_namespaced_custom_object(
        *kueue,
        ns,
        "workloads",
        {
            "apiVersion": "/".join(kueue),
            "kind": "Workload",
            "metadata": {
                "name": f"job-{job.metadata.name}",
                "labels": {"kueue.x-k8s.io/job-uid": job.metadata.uid},
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job.metadata.name,
                        "uid": job.metadata.uid,
                        "controller": True,
                    }
                ],
            },
            "spec": {"queueName": "gpus", "podSets": [{"name": "main", "count": 1, "template": template}]},
        },
    )
    quota_message = (
        "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu, 8 more needed"
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    kube.custom_objects.patch_namespaced_custom_object_status(
        *kueue,
        ns,
        "workloads",
        workload["metadata"]["name"],
        {
            "status": {
                "conditions": [
                    {
                        "type": "QuotaReserved",
                        "status": "False",
                        "reason": "Pending",
                        "message": quota_message,
                        "lastTransitionTime": now,
                    }
                ]
            }
        },
    )
    pending = wait_training(
        kube, ns, "queued", lambda t: condition(t, "Schedulable").get("reason") == "Pending", "Kueue's reason"
    )
    assert quota_message in condition(pending, "Schedulable")["message"]
    assert pending["status"]["phase"] == "Queued"
    assert kube.batch_v1.read_namespaced_job(job.metadata.name, ns).spec.suspend is True, "unsuspending is Kueue's"

    # ... then admits it by unsuspending the Job.
    kube.batch_v1.patch_namespaced_job(job.metadata.name, ns, {"spec": {"suspend": False}})
    admitted = wait_training(kube, ns, "queued", phase_is("Running"), "Running after admission")
    assert condition(admitted, "Schedulable")["status"] == "True"


# -- operator restarts ------------------------------------------------------------------------


def test_operator_killed_mid_reconcile_leaves_exactly_one_job(kube: Kube, ns: str, operator: op.OperatorProcess):
    create_training(kube, ns, "sturdy")
    wait_for(lambda: jobs(kube, ns, "sturdy"), timeout=30, what="the Job created")
    operator.stop(signal.SIGKILL)
    # As if it died after creating the Job but before writing status: status says nothing.
    kube.custom_objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        ns,
        TRAINING.plural,
        "sturdy",
        {"status": {"phase": None, "attempt": None, "jobName": None, "conditions": None}},
    )
    # And another that it had begun: its ConfigMap and ServiceAccount exist, nothing else.
    half = create_training(kube, ns, "half")
    spec = TrainingSpec.model_validate(half["spec"])
    begun = [builders.build_configmap("half", spec), builders.build_service_account("half")]
    kopf.adopt(begun, owner=half)
    kube.core_v1.create_namespaced_config_map(ns, begun[0])
    kube.core_v1.create_namespaced_service_account(ns, begun[1])

    started = time.monotonic()
    operator.start()
    wait_training(kube, ns, "sturdy", phase_is("Running"), "Running after the restart")
    wait_training(kube, ns, "half", phase_is("Running"), "Running after the restart")
    print(f"restart -> both Running: {time.monotonic() - started:.1f}s")
    assert [j.metadata.name for j in jobs(kube, ns, "sturdy")] == ["sturdy-a1"]
    assert [j.metadata.name for j in jobs(kube, ns, "half")] == ["half-a1"]
    assert len(running_pods(kube, ns, "sturdy-a1", 1)) == 1
    assert len(kube.core_v1.list_namespaced_config_map(ns, label_selector=names.selector("half")).items) == 1
