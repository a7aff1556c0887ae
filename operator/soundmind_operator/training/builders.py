"""The children of a SoundMindTraining, as plain manifests: pure functions of the spec.

Nothing here talks to the API. Owner references and namespaces are added by the caller
(`kopf.adopt`), so every builder can be tested by comparing dicts. The pod is decided in one
place, `build_job`: volumes, shared memory, the head address and the failure policy all follow
the pod contract in `soundmind.train.contract`.
"""

from __future__ import annotations

from typing import Any

from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind.train.config import dump_spec
from soundmind_operator import children, pods
from soundmind_operator.training import names

Manifest = dict[str, Any]

POD_GROUP_API_VERSION = "scheduling.k8s.io/v1beta1"  # Kubernetes 1.37, feature gate GenericWorkload

RAY_HEAD_PORT_NAME = "ray-gcs"
METRICS_PORT_NAME = "metrics"


def _metadata(name: str, training: str, **extra_labels: str) -> Manifest:
    return {"name": name, "labels": {**names.labels(training), **extra_labels}}


def build_configmap(training: str, spec: TrainingSpec) -> Manifest:
    """The rendered spec that `soundmind train --config` reads (the trainer owns the format)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(names.config_map(training), training),
        "data": {contract.CONFIG_FILE: dump_spec(spec)},
    }


def build_service_account(training: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(names.service_account(training), training),
    }


def build_role(training: str) -> Manifest:
    """What the trainer pods may do: report progress into this training's status, nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(names.role(training), training),
        "rules": contract.trainer_role_rules(training),
    }


def build_role_binding(training: str) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(names.role_binding(training), training),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names.role(training)},
        "subjects": [{"kind": "ServiceAccount", "name": names.service_account(training)}],
    }


def build_headless_service(training: str) -> Manifest:
    """Stable DNS names for the group's pods (`<job>-<index>.<service>`), so workers find the Ray
    head of the current attempt. Selects by training, not by attempt, so it outlives retries."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.headless_service(training), training),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # workers must resolve the head before it is Ready
            "selector": names.match_labels(training),
            "ports": [{"name": RAY_HEAD_PORT_NAME, "port": contract.RAY_HEAD_PORT, "protocol": "TCP"}],
        },
    }


def needs_headless_service(spec: TrainingSpec) -> bool:
    return spec.resources.nodes > 1


def build_children(training: str, spec: TrainingSpec) -> list[Manifest]:
    """Everything the Job's pods need, in creation order (the Job comes last, on its own)."""
    children = [
        build_configmap(training, spec),
        build_service_account(training),
        build_role(training),
        build_role_binding(training),
    ]
    if needs_headless_service(spec):
        children.append(build_headless_service(training))
    return children


def head_address(training: str, namespace: str, attempt: int, spec: TrainingSpec) -> str:
    if not needs_headless_service(spec):
        return "127.0.0.1"
    return f"{names.job(training, attempt)}-0.{names.headless_service(training)}.{namespace}.svc"


def job_suspended(spec: TrainingSpec) -> bool:
    """Suspended on request, and always while a Kueue queue has not admitted it (Kueue unsuspends)."""
    return spec.suspend or bool(spec.queue_name)


def build_pod_group(training: str, spec: TrainingSpec, attempt: int) -> Manifest:
    """The attempt's PodGroup: the scheduler binds its pods all together or not at all
    (`GangScheduling` plugin), so a group that does not fit holds no GPU. No Workload: a PodGroup's
    `workloadRef` is optional, and the Job controller's own integration (WorkloadWithJob) is alpha."""
    pod_group_spec: Manifest = {"schedulingPolicy": {"gang": {"minCount": spec.resources.nodes}}}
    if spec.resources.priority_class_name:
        # The group is preempted and placed at its pods' priority (the field is immutable).
        pod_group_spec["priorityClassName"] = spec.resources.priority_class_name
    return {
        "apiVersion": POD_GROUP_API_VERSION,
        "kind": "PodGroup",
        "metadata": _metadata(names.pod_group(training, attempt), training, **{names.ATTEMPT_LABEL: str(attempt)}),
        "spec": pod_group_spec,
    }


def build_job(
    training: str,
    namespace: str,
    spec: TrainingSpec,
    attempt: int,
    *,
    active_deadline_seconds: int | None = None,
    pod_group: bool = False,
) -> Manifest:
    """The Indexed Job of one attempt: one pod per node, index 0 is the Ray head and verl driver.

    `active_deadline_seconds` is what is left of `spec.activeDeadlineSeconds` for this attempt
    (the deadline is the run's, not each attempt's); None means no deadline. With `pod_group`, the
    pods join the attempt's PodGroup (`build_pod_group`), which must exist for them to be placed.
    """
    resources = spec.resources
    nodes = resources.nodes
    job_name = names.job(training, attempt)
    attempt_label = {names.ATTEMPT_LABEL: str(attempt)}
    job_labels = dict(attempt_label)
    if spec.queue_name:
        job_labels[names.KUEUE_QUEUE_LABEL] = spec.queue_name

    job_spec: Manifest = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        # Retries are the operator's: it replaces the whole group, which resumes from the checkpoint.
        "backoffLimit": 0,
        "suspend": job_suspended(spec),
        # The run succeeds when the driver (index 0) does; workers may be torn down by then.
        "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
        "podFailurePolicy": {
            "rules": [
                {
                    # The same spec would fail the same way: fail at once, and the operator won't retry.
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": contract.CONTAINER_NAME,
                        "operator": "In",
                        "values": [contract.EXIT_CONFIG_ERROR],
                    },
                },
                # Evictions, preemption and node drains are not the trainer's failures.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": {**names.labels(training), **attempt_label}},
            "spec": _pod_spec(training, namespace, spec, attempt),
        },
    }
    if pod_group:
        job_spec["template"]["spec"]["schedulingGroup"] = {"podGroupName": names.pod_group(training, attempt)}
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(job_name, training, **job_labels),
        "spec": job_spec,
    }
    # What its pods run, recorded: a later operator tells whether it would build them otherwise.
    job["metadata"]["annotations"] = {children.POD_TEMPLATE_ANNOTATION: children.pod_template_hash(job)}
    return job


def _pod_spec(training: str, namespace: str, spec: TrainingSpec, attempt: int) -> Manifest:
    resources = spec.resources
    pod: Manifest = {
        "restartPolicy": "Never",
        "serviceAccountName": names.service_account(training),
        "securityContext": pods.pod_security_context(contract.TRAINER_UID),
        "containers": [
            {
                "name": contract.CONTAINER_NAME,
                "image": spec.image,
                "command": ["soundmind", "train", "--config", contract.CONFIG_PATH],
                "env": _env(training, namespace, spec, attempt),
                "ports": [
                    {"name": RAY_HEAD_PORT_NAME, "containerPort": contract.RAY_HEAD_PORT, "protocol": "TCP"},
                    {"name": METRICS_PORT_NAME, "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
                ],
                "resources": pods.gpu_resources(
                    resources.gpu_resource, resources.gpus_per_node, resources.cpu, resources.memory
                ),
                "volumeMounts": [
                    {"name": "config", "mountPath": contract.CONFIG_DIR, "readOnly": True},
                    {"name": "shm", "mountPath": contract.SHM_MOUNT},
                    {"name": "checkpoints", "mountPath": contract.CHECKPOINTS_MOUNT},
                    {"name": "data", "mountPath": contract.DATA_MOUNT},
                    {"name": "models", "mountPath": contract.MODELS_MOUNT},
                ],
                "securityContext": pods.container_security_context(),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": names.config_map(training)}},
            pods.shm_volume("shm", resources.shm_size),
            pods.claim_volume("checkpoints", spec.storage.checkpoints.claim_name),
            pods.claim_volume("data", spec.storage.data.claim_name),
            pods.claim_volume("models", spec.storage.models.claim_name),
        ],
        **pods.placement(resources.node_selector, resources.tolerations, resources.priority_class_name),
    }
    if needs_headless_service(spec):
        pod["subdomain"] = names.headless_service(training)
        # One pod per node even when a node has GPUs to spare: "nodes" is what the user asked for.
        pod["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {names.JOB_NAME_LABEL: names.job(training, attempt)}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    return pod


def _env(training: str, namespace: str, spec: TrainingSpec, attempt: int) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": contract.ENV_TRAINING_NAME, "value": training},
        {"name": contract.ENV_NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": contract.ENV_NODE_NAME, "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": contract.ENV_ATTEMPT, "value": str(attempt)},
        {"name": contract.ENV_HEAD_ADDRESS, "value": head_address(training, namespace, attempt, spec)},
    ]
    return env + pods.hf_token_env(spec.hf_token_secret)
