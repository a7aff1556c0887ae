"""The children of a SoundMindServing, as plain manifests: pure functions of the spec, the model
to serve, and what the cluster offers (decided once at start-up).

Nothing here talks to the API; owner references and namespaces are added by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from soundmind.api.serving import ServingSpec
from soundmind.serve import render
from soundmind.train import contract as training_contract
from soundmind_operator import children, pods
from soundmind_operator import labels as standard
from soundmind_operator.serving import names

Manifest = dict[str, Any]

MODELS_MOUNT = training_contract.MODELS_MOUNT
CHECKPOINTS_MOUNT = training_contract.CHECKPOINTS_MOUNT
HF_HOME = f"{MODELS_MOUNT}/.cache/huggingface"  # downloads land on the models volume, once
# After SIGTERM the pod leaves the Service's endpoints; requests routed before that still arrive for a
# few seconds, so the server keeps running this long before vLLM starts draining.
PRESTOP_SECONDS = 10
PROBE_PERIOD_SECONDS = 10
DEFAULT_PROMETHEUS_URL = "http://prometheus-operated.monitoring.svc:9090"
KEDA_POLLING_SECONDS = 15
METRICS_PATH = "/metrics"

# Bump this only for a change to the pod template that running replicas must get (a fix of safety
# or correctness): every serving's replicas then roll. Any other change to `_pod_metadata` or
# `_pod_spec` reaches a serving's pods when they roll anyway (`children`).
POD_TEMPLATE_VERSION = 1
# Spec fields that size the Deployment but never shape a pod: changing them rolls no replica.
SCALING_FIELDS = frozenset({"replicas", "autoscaling"})

# What the autoscaler can be.
KEDA, HPA, NO_AUTOSCALER = "KEDA", "HPA", "None"


@dataclass(frozen=True)
class Platform:
    """What the cluster offers, found once at start-up."""

    keda: bool = False  # KEDA's ScaledObject is served
    service_monitors: bool = False  # prometheus-operator's ServiceMonitor is served
    prometheus_url: str = DEFAULT_PROMETHEUS_URL  # where KEDA queries vLLM's metrics


@dataclass(frozen=True)
class ModelSource:
    """What `vllm serve` loads, and the volume it is on when it is a training's export."""

    path: str
    checkpoints_claim: str | None = None  # a training's checkpoint volume, mounted read-only


def autoscaler_kind(spec: ServingSpec, platform: Platform) -> str:
    if not spec.autoscaling.enabled:
        return NO_AUTOSCALER
    return KEDA if platform.keda else HPA


def min_replicas(spec: ServingSpec) -> int:
    return spec.autoscaling.min_replicas if spec.autoscaling.enabled else spec.replicas


def max_replicas(spec: ServingSpec) -> int:
    return spec.autoscaling.max_replicas if spec.autoscaling.enabled else spec.replicas


def _metadata(name: str, serving: str) -> Manifest:
    return {"name": name, "labels": names.labels(serving)}


def pod_template_inputs(spec: ServingSpec, model: ModelSource, platform: Platform, rollout: str) -> Manifest:
    """Everything the pod template is built from but the operator's code: the spec (less its
    scaling), the model, what the platform offers the pods, and the serving's rollout annotation."""
    return {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude=set(SCALING_FIELDS)),
        "model": [model.path, model.checkpoints_claim],
        "serviceMonitors": platform.service_monitors,
        "rollout": rollout,
    }


def build_deployment(
    serving: str, spec: ServingSpec, model: ModelSource, platform: Platform, rollout: str = ""
) -> Manifest:
    """`vllm serve` behind probes sized for slow weight loads, drained gracefully, rolled with no
    replica lost. `replicas` is left out while an autoscaler owns it. `rollout` is the serving's
    `children.ROLLOUT_ANNOTATION`: a new value rolls the replicas onto this operator's template."""
    deployment_spec: Manifest = {
        "selector": {"matchLabels": names.match_labels(serving)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        # Reported as stuck only once a new replica has had its whole startup allowance.
        "progressDeadlineSeconds": spec.startup_timeout_seconds + 300,
        "revisionHistoryLimit": 3,
        "template": {"metadata": _pod_metadata(serving, platform), "spec": _pod_spec(spec, model)},
    }
    if not spec.autoscaling.enabled:
        deployment_spec["replicas"] = spec.replicas
    metadata = _metadata(names.deployment(serving), serving)
    metadata["annotations"] = {
        children.POD_INPUTS_ANNOTATION: children.pod_inputs(
            POD_TEMPLATE_VERSION, pod_template_inputs(spec, model, platform, rollout)
        )
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": deployment_spec}


def _pod_metadata(serving: str, platform: Platform) -> Manifest:
    metadata: Manifest = {"labels": names.labels(serving)}
    if not platform.service_monitors:  # Prometheus' kubernetes-pods job finds pods by these
        metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(render.PORT),
            "prometheus.io/path": METRICS_PATH,
        }
    return metadata


def _pod_spec(spec: ServingSpec, model: ModelSource) -> Manifest:
    resources = spec.resources
    health = {"httpGet": {"path": "/health", "port": names.HTTP_PORT_NAME}, "timeoutSeconds": 5}
    mounts = [
        {"name": "shm", "mountPath": training_contract.SHM_MOUNT},
        {"name": "models", "mountPath": MODELS_MOUNT},
    ]
    volumes = [
        pods.shm_volume("shm", resources.shm_size),
        pods.claim_volume("models", spec.storage.models.claim_name),
    ]
    if model.checkpoints_claim:
        mounts.append({"name": "checkpoints", "mountPath": CHECKPOINTS_MOUNT, "readOnly": True})
        volumes.append(pods.claim_volume("checkpoints", model.checkpoints_claim, read_only=True))
    container = {
        "name": names.CONTAINER_NAME,
        "image": spec.image,
        "command": render.SERVE_COMMAND,
        "args": render.vllm_arguments(spec, model.path),
        "env": [{"name": "HF_HOME", "value": HF_HOME}, *pods.hf_token_env(spec.hf_token_secret)],
        "ports": [{"name": names.HTTP_PORT_NAME, "containerPort": render.PORT, "protocol": "TCP"}],
        "resources": pods.gpu_resources(resources.gpu_resource, spec.gpus, resources.cpu, resources.memory),
        "volumeMounts": mounts,
        # Loading a 7B model's weights takes minutes: liveness and readiness wait for this to pass.
        "startupProbe": {
            **health,
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "failureThreshold": math.ceil(spec.startup_timeout_seconds / PROBE_PERIOD_SECONDS),
        },
        "readinessProbe": {**health, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 15, "failureThreshold": 4},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": pods.container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "securityContext": pods.pod_security_context(names.SERVER_UID),
        # vLLM finishes in-flight requests on SIGTERM; long audio prompts need time.
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + spec.drain_seconds,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": volumes,
        **pods.placement(resources.node_selector, resources.tolerations),
    }


def build_service(serving: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(names.service(serving), serving),
        "spec": {
            "type": "ClusterIP",
            "selector": names.match_labels(serving),
            "ports": [
                {
                    "name": names.HTTP_PORT_NAME,
                    "port": render.PORT,
                    "targetPort": names.HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_disruption_budget(serving: str) -> Manifest:
    """A voluntary disruption (a node drain) takes at most one replica at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(names.disruption_budget(serving), serving),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.match_labels(serving)}},
    }


# The pod labels that identify a serving's series in Prometheus.
SCRAPED_LABELS = (standard.INSTANCE_LABEL, standard.COMPONENT_LABEL)


# Pod labels as Prometheus stores them: a ServiceMonitor's podTargetLabels, or the labelmap of the
# standard kubernetes-pods scrape job, turn `app.kubernetes.io/instance` into this.
def _prometheus_label(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


def _series_matchers(serving: str, namespace: str) -> dict[str, str]:
    """This serving's series: its namespace, and its pods' instance and component labels."""
    own = names.match_labels(serving)
    return {"namespace": namespace, **{_prometheus_label(label): own[label] for label in SCRAPED_LABELS}}


def scaling_query(serving: str, namespace: str, spec: ServingSpec) -> str:
    """The chosen vLLM gauge summed over this serving's pods: one series, whose value divided by the
    per-replica target is the replica count (AverageValue). A per-pod query (one series per pod) is
    what breaks other charts' autoscaling."""
    matchers = ",".join(f'{k}="{v}"' for k, v in _series_matchers(serving, namespace).items())
    return f"sum({spec.autoscaling.metric.prometheus_name}{{{matchers}}})"


def _behavior(spec: ServingSpec) -> Manifest:
    scaling = spec.autoscaling
    return {
        "scaleUp": {"stabilizationWindowSeconds": scaling.scale_up_stabilization_seconds},
        "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds},
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity: 5 -> "5", 0.8 -> "800m"."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def _target_ref(serving: str) -> Manifest:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.deployment(serving)}


def build_scaled_object(serving: str, namespace: str, spec: ServingSpec, platform: Platform) -> Manifest:
    scaling = spec.autoscaling
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(names.autoscaler(serving), serving),
        "spec": {
            "scaleTargetRef": _target_ref(serving),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": platform.prometheus_url,
                        "query": scaling_query(serving, namespace, spec),
                        "threshold": f"{scaling.target:g}",
                    },
                }
            ],
        },
    }


def external_metric_name(spec: ServingSpec) -> str:
    """The name prometheus-adapter's external rule (README) gives the vLLM gauge: `vllm_<name>`."""
    return spec.autoscaling.metric.prometheus_name.replace(":", "_")


def build_hpa(serving: str, namespace: str, spec: ServingSpec) -> Manifest:
    """Without KEDA: an HPA on the same signal, as an External metric served by prometheus-adapter."""
    scaling = spec.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(names.autoscaler(serving), serving),
        "spec": {
            "scaleTargetRef": _target_ref(serving),
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": external_metric_name(spec),
                            "selector": {"matchLabels": _series_matchers(serving, namespace)},
                        },
                        "target": {"type": "AverageValue", "averageValue": _quantity(scaling.target)},
                    },
                }
            ],
            "behavior": _behavior(spec),
        },
    }


def build_service_monitor(serving: str) -> Manifest:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(names.service_monitor(serving), serving),
        "spec": {
            "selector": {"matchLabels": names.match_labels(serving)},
            "endpoints": [{"port": names.HTTP_PORT_NAME, "path": METRICS_PATH, "interval": "15s"}],
            # The autoscaling query selects a serving's series by these.
            "podTargetLabels": list(SCRAPED_LABELS),
        },
    }


def build_children(
    serving: str, namespace: str, spec: ServingSpec, model: ModelSource, platform: Platform, rollout: str = ""
) -> list[Manifest]:
    """Everything the serving needs, in apply order (the Deployment after its Service)."""
    built = [build_service(serving), build_deployment(serving, spec, model, platform, rollout)]
    if max_replicas(spec) > 1:
        built.append(build_disruption_budget(serving))
    match autoscaler_kind(spec, platform):
        case "KEDA":
            built.append(build_scaled_object(serving, namespace, spec, platform))
        case "HPA":
            built.append(build_hpa(serving, namespace, spec))
    if platform.service_monitors:
        built.append(build_service_monitor(serving))
    return built
