"""`SoundMindServing` (soundmind.ai/v1alpha1): a model served by vLLM's OpenAI-compatible server,
with audio input, autoscaled on vLLM's own load signals.

The same classes validate the custom resource's `spec` in the operator and generate the CRD's
OpenAPI schema (`soundmind_operator.crds`); the CEL rules below are the API server's twins of the
validators, so a bad spec is refused at `kubectl apply`.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from soundmind.api import vllm_metrics
from soundmind.api.base import (
    DNS_SUBDOMAIN,
    QUANTITY,
    RESOURCE_NAME,
    ApiModel,
    Condition,
    ResourceKind,
    SecretKeyRef,
    Toleration,
)
from soundmind.api.training import ModelStorageSpec
from soundmind.version import SERVER_IMAGE

SERVING = ResourceKind(kind="SoundMindServing", plural="soundmindservings", short="sms")

# The OpenAI model name clients ask for: vLLM accepts any string; we keep it to what is safe in a
# Prometheus label value and a URL path.
SERVED_MODEL_NAME = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class ScalingMetric(enum.StrEnum):
    """vLLM's load signals (Prometheus gauges, per engine) that the autoscaler can follow."""

    NUM_REQUESTS_WAITING = "num_requests_waiting"
    NUM_REQUESTS_RUNNING = "num_requests_running"
    KV_CACHE_USAGE = "kv_cache_usage"

    @property
    def prometheus_name(self) -> str:
        """The gauge's name in vLLM's /metrics (the serving contract, soundmind.api.vllm_metrics)."""
        return str(_SCALING_GAUGES[self])


_SCALING_GAUGES = {
    ScalingMetric.NUM_REQUESTS_WAITING: vllm_metrics.NUM_REQUESTS_WAITING,
    ScalingMetric.NUM_REQUESTS_RUNNING: vllm_metrics.NUM_REQUESTS_RUNNING,
    ScalingMetric.KV_CACHE_USAGE: vllm_metrics.KV_CACHE_USAGE,
}


class FromTraining(ApiModel):
    name: str = Field(
        ...,
        pattern=DNS_SUBDOMAIN,
        max_length=253,
        description="A SoundMindTraining in the same namespace; its exported model (status.model) is served once "
        "it has Succeeded.",
    )


class AutoscalingSpec(ApiModel):
    enabled: bool = Field(True, description="Scale on vLLM's load (KEDA, or an HPA); off: spec.replicas decides.")
    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(8, ge=1, le=1000, description="Most replicas the autoscaler may run.")
    metric: ScalingMetric = Field(
        ScalingMetric.NUM_REQUESTS_WAITING,
        strict=False,  # strict enums take only members in Python mode; the wire gives the string
        description="vLLM signal to follow: num_requests_waiting (queue length), num_requests_running, or "
        "kv_cache_usage (0-1).",
    )
    target: float = Field(
        5,
        gt=0,
        le=100000,
        description="Value of the metric per replica that the autoscaler keeps (kv_cache_usage: a fraction, at "
        "most 1).",
    )
    scale_up_stabilization_seconds: int = Field(
        0, ge=0, le=3600, description="Window over which scale-up recommendations are considered."
    )
    scale_down_stabilization_seconds: int = Field(
        300, ge=0, le=3600, description="Window over which scale-down recommendations are considered."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(_MIN_MAX_MESSAGE + f" (got {self.min_replicas} > {self.max_replicas})")
        if self.metric is ScalingMetric.KV_CACHE_USAGE and self.target > 1:
            raise ValueError(_KV_TARGET_MESSAGE + f" (got {self.target})")
        return self


class ServingResourcesSpec(ApiModel):
    gpus: int | None = Field(
        None,
        ge=1,
        le=16,
        description="GPUs each replica requests; follows vllm.tensorParallelSize when unset (and must equal it "
        "when set).",
    )
    gpu_resource: str = Field(
        "nvidia.com/gpu", pattern=RESOURCE_NAME, max_length=253, description="Extended resource name of the GPU."
    )
    cpu: str = Field("8", pattern=QUANTITY, max_length=64, description="CPU each replica requests (a quantity).")
    memory: str = Field("64Gi", pattern=QUANTITY, max_length=64, description="Memory each replica requests.")
    shm_size: str = Field(
        "8Gi", pattern=QUANTITY, max_length=64, description="Size of the in-memory /dev/shm (tensor-parallel NCCL)."
    )
    node_selector: dict[str, str] = Field({}, max_length=64, description="Node labels the server pods must match.")
    tolerations: list[Toleration] = Field([], max_length=64, description="Tolerations for the server pods.")


class VllmSpec(ApiModel):
    tensor_parallel_size: int = Field(1, ge=1, le=16, description="GPUs one replica shards the model over.")
    max_model_len: int = Field(
        32768, ge=256, le=1048576, description="Context length (prompt + response tokens) vLLM allocates for."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Fraction of each GPU's memory vLLM may use (weights and KV cache)."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Weight and activation precision."
    )
    extra_args: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        [],
        max_length=256,
        description="Raw `vllm serve` arguments, appended last; checked against vLLM's own argument parser "
        "before any pod is created.",
    )


class ServingStorageSpec(ApiModel):
    models: ModelStorageSpec = Field(
        default_factory=ModelStorageSpec, description="Model weights volume (and the Hugging Face cache)."
    )


class ServingSpec(ApiModel):
    """Desired state of a SoundMind model server."""

    model: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Model to serve: a Hugging Face id, or a path on the models volume (/models/...). Exactly one of "
        "model and fromTraining.",
    )
    from_training: FromTraining | None = Field(
        None,
        description="Serve the model a finished SoundMindTraining exported. Exactly one of model and fromTraining.",
    )
    served_model_name: str = Field(
        "soundmind",
        pattern=SERVED_MODEL_NAME,
        max_length=128,
        description="The model name clients send in OpenAI requests.",
    )
    image: str = Field(SERVER_IMAGE, min_length=1, max_length=1024, description="Server (vLLM) container image.")
    replicas: int = Field(
        1, ge=0, le=1000, description="Replicas when autoscaling is off (the scale subresource's spec path)."
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Scaling on vLLM's load.")
    resources: ServingResourcesSpec = Field(
        default_factory=ServingResourcesSpec, description="Per-replica resources and placement."
    )
    vllm: VllmSpec = Field(default_factory=VllmSpec, description="vLLM engine settings.")
    storage: ServingStorageSpec = Field(default_factory=ServingStorageSpec, description="Volumes.")
    hf_token_secret: SecretKeyRef | None = Field(
        None, description="Secret key holding a Hugging Face token (never a literal token)."
    )
    startup_timeout_seconds: int = Field(
        1800,
        ge=30,
        le=86400,
        description="How long a replica may take to load its weights and answer /health before it is restarted.",
    )
    drain_seconds: int = Field(
        120,
        ge=0,
        le=3600,
        description="How long a stopping replica keeps answering in-flight requests (long audio prompts) before "
        "it is killed.",
    )

    @property
    def gpus(self) -> int:
        return self.resources.gpus or self.vllm.tensor_parallel_size

    @model_validator(mode="after")
    def _consistent(self) -> ServingSpec:
        if (self.model is None) == (self.from_training is None):
            raise ValueError(_MODEL_SOURCE_MESSAGE)
        if self.resources.gpus is not None and self.resources.gpus != self.vllm.tensor_parallel_size:
            raise ValueError(
                _GPUS_MESSAGE
                + f" (got {self.resources.gpus} GPUs, tensorParallelSize {self.vllm.tensor_parallel_size})"
            )
        return self


_MODEL_SOURCE_MESSAGE = "exactly one of spec.model and spec.fromTraining must be set"
_GPUS_MESSAGE = "resources.gpus must equal vllm.tensorParallelSize (one GPU per tensor-parallel shard)"
_MIN_MAX_MESSAGE = "autoscaling.minReplicas must be at most autoscaling.maxReplicas"
_KV_TARGET_MESSAGE = "autoscaling.target is a fraction (0-1] when autoscaling.metric is kv_cache_usage"

# CEL twins of the validators above, evaluated by the API server at admission.
SERVING_SPEC_RULES = [
    {"rule": "has(self.model) != has(self.fromTraining)", "message": _MODEL_SOURCE_MESSAGE, "fieldPath": ".model"},
    {
        "rule": "!has(self.resources.gpus) || self.resources.gpus == self.vllm.tensorParallelSize",
        "message": _GPUS_MESSAGE,
        "fieldPath": ".resources.gpus",
    },
]
# The API server also checks these against the section's default ({}), before field defaults apply.
AUTOSCALING_RULES = [
    {
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "message": _MIN_MAX_MESSAGE,
        "fieldPath": ".minReplicas",
    },
    {
        "rule": "!has(self.metric) || !has(self.target) || self.metric != 'kv_cache_usage' || self.target <= 1.0",
        "message": _KV_TARGET_MESSAGE,
        "fieldPath": ".target",
    },
]


ServingPhase = Literal["Pending", "Progressing", "Available", "Degraded", "Failed"]


class ServingStatus(ApiModel):
    """Observed state, written by the operator."""

    phase: ServingPhase | None = Field(None, description="Pending, Progressing, Available, Degraded or Failed.")
    conditions: list[Condition] = Field(
        [],
        description="Available, Progressing, Schedulable, ResolvedRefs, ScalingActive, ModelReady, ConfigError, "
        "PodTemplateCurrent.",
    )
    observed_generation: int | None = Field(None, description="The spec generation last reconciled.")
    replicas: int | None = Field(None, ge=0, description="Replicas of the Deployment (the scale subresource's).")
    ready_replicas: int | None = Field(None, ge=0, description="Replicas answering /health.")
    selector: str | None = Field(None, description="Label selector of the server pods (for kubectl scale and HPAs).")
    url: str | None = Field(None, description="In-cluster base URL of the OpenAI-compatible API.")
    model: str | None = Field(None, description="The model being served (an id, or a path on a volume).")
    autoscaler: Literal["KEDA", "HPA", "None"] | None = Field(
        None, description="What scales the Deployment: a KEDA ScaledObject, an HPA, or nothing (spec.replicas)."
    )
