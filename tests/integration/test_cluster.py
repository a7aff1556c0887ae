"""The cluster the other integration tests stand on: real scheduling of GPU requests, real controllers,
real RBAC, and kwok's simulated pod lifecycle (tests/support/sim.py)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support import sim
from tests.support.kube import Kube, exists
from tests.support.poll import wait_for

pytestmark = pytest.mark.integration

IMAGE = "registry.invalid/soundmind/sim:latest"  # never pulled: kwok runs no containers


def pod_spec(gpus: int = 0, restart_policy: str = "Never") -> client.V1PodSpec:
    limits = {sim.GPU_RESOURCE: str(gpus)} if gpus else None
    return client.V1PodSpec(
        restart_policy=restart_policy,
        # Simulated nodes only: on a kind cluster (SOUNDMIND_TEST_KUBECONFIG) a pod without GPUs would
        # otherwise land on a real node too, which would try to pull this image.
        node_selector={sim.MANAGED_NODE_LABEL: "true"},
        containers=[
            client.V1Container(name="main", image=IMAGE, resources=client.V1ResourceRequirements(limits=limits))
        ],
    )


def create_pod(kube: Kube, namespace: str, name: str, *, gpus: int = 0, annotations=None) -> None:
    kube.core_v1.create_namespaced_pod(
        namespace,
        client.V1Pod(metadata=client.V1ObjectMeta(name=name, annotations=annotations), spec=pod_spec(gpus)),
    )


def condition(obj, kind: str):
    return next((c for c in (obj.status.conditions or []) if c.type == kind), None)


def pod_when(kube: Kube, namespace: str, name: str, predicate, what: str, timeout: float = 30):
    def check():
        pod = kube.core_v1.read_namespaced_pod(name, namespace)
        return pod if predicate(pod) else None

    return wait_for(check, timeout=timeout, what=f"pod {namespace}/{name} {what}")


def is_ready(pod) -> bool:
    ready = condition(pod, "Ready")
    return pod.status.phase == "Running" and ready is not None and ready.status == "True"


def test_pod_requesting_eight_gpus_runs_on_a_simulated_gpu_node(kube: Kube, namespace: str):
    create_pod(kube, namespace, "trainer", gpus=8)

    pod = pod_when(kube, namespace, "trainer", is_ready, "Running and Ready")

    node = kube.core_v1.read_node(pod.spec.node_name)
    assert node.metadata.labels[sim.GPU_PRESENT_LABEL] == "true"
    assert node.status.allocatable[sim.GPU_RESOURCE] == "8"


def test_pod_requesting_more_gpus_than_a_node_has_stays_unschedulable(kube: Kube, namespace: str):
    create_pod(kube, namespace, "too-big", gpus=9)

    def unschedulable(pod) -> bool:
        scheduled = condition(pod, "PodScheduled")
        return scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable"

    pod = pod_when(kube, namespace, "too-big", unschedulable, "PodScheduled=False/Unschedulable")
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name
    assert "nvidia.com/gpu" in condition(pod, "PodScheduled").message


def test_indexed_job_of_two_eight_gpu_pods_spans_two_nodes_and_completes(kube: Kube, namespace: str):
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(annotations={sim.RUN_DURATION: "2s"}), spec=pod_spec(gpus=8)
    )
    kube.batch_v1.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="grpo"),
            spec=client.V1JobSpec(
                completions=2, parallelism=2, completion_mode="Indexed", backoff_limit=0, template=template
            ),
        ),
    )

    def complete():
        job = kube.batch_v1.read_namespaced_job("grpo", namespace)
        done = condition(job, "Complete")
        failed = condition(job, "Failed")
        assert not (failed and failed.status == "True"), f"job failed: {failed.message}"
        return job if done and done.status == "True" else None

    job = wait_for(complete, timeout=60, what="job grpo Complete")
    assert job.status.succeeded == 2
    pods = kube.core_v1.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name=grpo").items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]
    assert len({p.spec.node_name for p in pods}) == 2, "each 8-GPU pod needs a whole node"
    for pod in pods:
        assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_run_duration_counts_from_the_pod_start_even_when_the_pod_changes(kube: Kube, namespace: str):
    run = 10  # seconds; the pod changes half-way, so a restarted clock would run >= 1.5 x as long
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(annotations={sim.RUN_DURATION: f"{run}s"}), spec=pod_spec()
    )
    kube.batch_v1.create_namespaced_job(
        namespace,
        client.V1Job(metadata=client.V1ObjectMeta(name="steady"), spec=client.V1JobSpec(template=template)),
    )
    pod = wait_for(
        lambda: next(iter(kube.core_v1.list_namespaced_pod(namespace).items), None),
        what="the job's pod",
    )
    name = pod.metadata.name
    started = pod_when(kube, namespace, name, is_ready, "Running and Ready").status.start_time
    time.sleep(max(0.0, run / 2 - (datetime.now(UTC) - started).total_seconds()))
    changed_at = (datetime.now(UTC) - started).total_seconds()
    changed = kube.core_v1.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"progress": "half"}}})
    assert changed.status.phase == "Running", "the change must land part-way through the run"

    pod = pod_when(kube, namespace, name, lambda p: p.status.phase == "Succeeded", "Succeeded")

    terminated = pod.status.container_statuses[0].state.terminated
    ran = (terminated.finished_at - pod.status.start_time).total_seconds()
    # Timestamps have 1 s resolution (start_time is truncated, so changed_at may read up to 1 s
    # late): a clock restarted by the change would show ran >= changed_at + run - 2. A loaded
    # machine only delays completion, so there is no tight upper bound on the honest run.
    restarted = changed_at + run - 2
    assert run - 1 <= ran < restarted, f"ran {ran}s for a run of {run}s changed at {changed_at:.1f}s"


@pytest.mark.parametrize("when", ["in-template", "patched-live"])
def test_pod_marked_for_failure_ends_failed_with_the_exit_code(kube: Kube, namespace: str, when: str):
    marks = {sim.EXIT_CODE: "137", sim.EXIT_REASON: "OOMKilled"}
    create_pod(kube, namespace, "doomed", annotations=marks if when == "in-template" else None)
    if when == "patched-live":
        pod_when(kube, namespace, "doomed", is_ready, "Running and Ready")
        kube.core_v1.patch_namespaced_pod("doomed", namespace, {"metadata": {"annotations": marks}})

    pod = pod_when(kube, namespace, "doomed", lambda p: p.status.phase == "Failed", "Failed")

    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


def test_pod_marked_with_exit_code_zero_succeeds(kube: Kube, namespace: str):
    create_pod(kube, namespace, "fine", annotations={sim.EXIT_CODE: "0"})

    pod = pod_when(kube, namespace, "fine", lambda p: p.status.phase == "Succeeded", "Succeeded")

    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (0, "Completed")


def test_deployment_of_two_replicas_becomes_available(kube: Kube, namespace: str):
    labels = {"app": "web"}
    kube.apps_v1.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels), spec=pod_spec(restart_policy="Always")
                ),
            ),
        ),
    )

    def available():
        deployment = kube.apps_v1.read_namespaced_deployment("web", namespace)
        ready = condition(deployment, "Available")
        return deployment if deployment.status.available_replicas == 2 and ready and ready.status == "True" else None

    wait_for(available, timeout=60, what="deployment web Available with 2 replicas")


def test_deleted_pod_goes_away(kube: Kube, namespace: str):
    create_pod(kube, namespace, "short-lived")
    pod_when(kube, namespace, "short-lived", is_ready, "Running and Ready")

    kube.core_v1.delete_namespaced_pod("short-lived", namespace)

    wait_for(
        lambda: not exists(lambda: kube.core_v1.read_namespaced_pod("short-lived", namespace)),
        timeout=30,
        what="deleted pod removed",
    )


def test_deleted_pod_of_a_job_with_a_pod_failure_policy_goes_away(kube: Kube, namespace: str):
    """The Job controller keeps its tracking finalizer on a deleted pod until the pod is terminal
    (with a podFailurePolicy it must read the exit code), so a deleted pod must stop, as under a
    kubelet, before it can go away. Without that, training pods would hang Terminating."""
    policy = client.V1PodFailurePolicy(
        rules=[
            client.V1PodFailurePolicyRule(
                action="FailJob",
                on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(operator="In", values=[78]),
            )
        ]
    )
    kube.batch_v1.create_namespaced_job(
        namespace,
        client.V1Job(
            metadata=client.V1ObjectMeta(name="held"),
            spec=client.V1JobSpec(
                backoff_limit=0, pod_failure_policy=policy, template=client.V1PodTemplateSpec(spec=pod_spec(gpus=8))
            ),
        ),
    )
    selector = "batch.kubernetes.io/job-name=held"
    wait_for(
        lambda: [p for p in kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items if is_ready(p)],
        what="the job's pod Running and Ready",
    )

    pod = kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items[0]
    kube.core_v1.delete_namespaced_pod(pod.metadata.name, namespace)

    wait_for(
        lambda: not exists(lambda: kube.core_v1.read_namespaced_pod(pod.metadata.name, namespace)),
        timeout=30,
        what="the deleted pod removed",
    )


def test_service_account_can_do_what_its_role_allows_and_nothing_else(kube: Kube, namespace: str):
    kube.core_v1.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    kube.rbac_v1.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    kube.rbac_v1.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-pods"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    token = kube.core_v1.create_namespaced_service_account_token(
        "reader", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    admin = kube.api_client.configuration
    as_reader = client.Configuration()
    as_reader.host = admin.host
    as_reader.ssl_ca_cert = admin.ssl_ca_cert
    as_reader.verify_ssl = admin.verify_ssl
    as_reader.api_key = {"authorization": f"Bearer {token}"}
    reader = client.CoreV1Api(client.ApiClient(as_reader))

    assert reader.list_namespaced_pod(namespace).items == []

    def refused(call) -> int:
        with pytest.raises(ApiException) as refusal:
            call()
        return refusal.value.status

    assert refused(lambda: reader.list_namespaced_secret(namespace)) == 403
    assert refused(lambda: reader.list_namespaced_pod("default")) == 403
    assert refused(lambda: reader.delete_namespaced_pod("anything", namespace)) == 403


def test_kubectl_get_nodes_shows_gpu_capacity(kube: Kube):
    result = kube.kubectl(
        "get",
        "nodes",
        "-l",
        f"{sim.GPU_PRESENT_LABEL}=true",
        "--no-headers",
        "-o",
        r"custom-columns=NAME:.metadata.name,GPUS:.status.capacity.nvidia\.com/gpu",
    )

    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert len(rows) >= sim.DEFAULT_NODE_COUNT, result.stdout
    assert all(gpus == str(sim.DEFAULT_NODE_SHAPE.gpus) for _, gpus in rows), result.stdout


def test_aggregation_layer_accepts_front_proxy_requests(kube: Kube):
    # What an aggregated API server (a metrics adapter) reads to trust requests the API server proxies.
    authentication = kube.core_v1.read_namespaced_config_map("extension-apiserver-authentication", "kube-system")

    assert "BEGIN CERTIFICATE" in authentication.data["requestheader-client-ca-file"]
    assert json.loads(authentication.data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(authentication.data["requestheader-allowed-names"]), "no front-proxy client name is allowed"
