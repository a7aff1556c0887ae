"""`SoundMindTraining` (soundmind.ai/v1alpha1): the one typed model of a training.

The same classes validate the custom resource's `spec` in the operator, generate the CRD's OpenAPI
schema (`soundmind_operator.crds`), and are what `soundmind train --config FILE` reads inside the
pod. Defaults follow the SoundMind reference launch script, except where it cannot work (a 400-token
prompt cannot hold a 60-130 s spoken question at ~25 audio tokens per second).
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

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
from soundmind.version import TRAINER_IMAGE

TRAINING = ResourceKind(kind="SoundMindTraining", plural="soundmindtrainings", short="smt")


class Modality(enum.StrEnum):
    """What the model is given of each question."""

    AUDIO_TEXT = "audio-text"
    TEXT = "text"
    AUDIO = "audio"

    @property
    def has_audio(self) -> bool:
        return self is not Modality.TEXT


# Spec fields a user may change on a live training; all others are immutable (CEL transition rules).
MUTABLE_SPEC_FIELDS = (
    "suspend",
    "maxRetries",
    "activeDeadlineSeconds",
    "pendingTimeoutSeconds",
    "gangTimeoutSeconds",
    "stallTimeoutSeconds",
    "ttlSecondsAfterFinished",
)


class DatasetSpec(ApiModel):
    path: str = Field(
        "/data/alr",
        min_length=1,
        max_length=1024,
        description="Path on the data volume: a raw ALR layout (prepared on first start) or a directory of "
        "prepared parquet files (train.parquet, dev.parquet).",
    )
    modality: Modality = Field(
        Modality.AUDIO_TEXT,
        strict=False,  # strict enums take only members in Python mode; the wire gives the string
        description="What the model is given: 'audio-text' (spoken question plus its text), 'text' (text "
        "only), or 'audio' (the question only as audio, plus the fixed answer instruction).",
    )


class AlgorithmSpec(ApiModel):
    rollout_n: int = Field(8, ge=1, le=64, description="GRPO group size: responses sampled per prompt.")
    learning_rate: float = Field(3.0e-7, gt=0, le=1, description="Actor learning rate.")
    kl_coef: float = Field(0.001, ge=0, le=10, description="KL loss coefficient (low_var_kl, applied as a loss term).")
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the training split.")
    train_batch_size: int = Field(32, ge=1, le=65536, description="Prompts per GRPO step.")
    max_prompt_length: int = Field(
        4096,
        ge=256,
        le=131072,
        description="Prompt token budget. Qwen2.5-Omni uses about 25 tokens per second of audio, so a "
        "60-130 s question needs 1.5k-3k tokens; the trainer refuses a value the data cannot fit.",
    )
    max_response_length: int = Field(2048, ge=16, le=131072, description="Response token budget.")


class RewardSpec(ApiModel):
    format_weight: float = Field(1.0, ge=0, le=100, description="Weight of the <think>/Answer format reward.")
    answer_weight: float = Field(2.0, ge=0, le=100, description="Weight of the correct-answer reward.")
    length_weight: float = Field(1.0, ge=0, le=100, description="Weight of the response-length reward.")


class ResourcesSpec(ApiModel):
    nodes: int = Field(1, ge=1, le=128, description="Nodes (pods) in the group; more than one runs Ray across nodes.")
    gpus_per_node: int = Field(8, ge=1, le=16, description="GPUs each pod requests.")
    gpu_resource: str = Field(
        "nvidia.com/gpu", pattern=RESOURCE_NAME, max_length=253, description="Extended resource name of the GPU."
    )
    cpu: str = Field("64", pattern=QUANTITY, max_length=64, description="CPU each pod requests (a quantity).")
    memory: str = Field("512Gi", pattern=QUANTITY, max_length=64, description="Memory each pod requests.")
    shm_size: str = Field(
        "64Gi", pattern=QUANTITY, max_length=64, description="Size of the in-memory /dev/shm (NCCL, Ray object store)."
    )
    node_selector: dict[str, str] = Field({}, max_length=64, description="Node labels the training pods must match.")
    tolerations: list[Toleration] = Field(
        [], max_length=64, description="Tolerations for the training pods (e.g. GPU taints)."
    )
    priority_class_name: str = Field(
        "", max_length=253, description="PriorityClass of the training pods ('' for the cluster default)."
    )


def _claim(default: str, holding: str):
    return Field(
        default, pattern=DNS_SUBDOMAIN, max_length=253, description=f"PersistentVolumeClaim holding {holding}."
    )


class CheckpointStorageSpec(ApiModel):
    claim_name: str = _claim("soundmind-checkpoints", "checkpoints")
    save_every: int = Field(
        100, ge=1, le=1_000_000, description="Save a checkpoint every N steps (retries resume from the last one)."
    )
    keep: int = Field(3, ge=1, le=1000, description="Checkpoints to keep; older ones are deleted.")


class DataStorageSpec(ApiModel):
    claim_name: str = _claim("alr-data", "the ALR data")


class ModelStorageSpec(ApiModel):
    claim_name: str = _claim("models", "model weights")


class StorageSpec(ApiModel):
    checkpoints: CheckpointStorageSpec = Field(
        default_factory=CheckpointStorageSpec, description="Checkpoint volume and policy."
    )
    data: DataStorageSpec = Field(default_factory=DataStorageSpec, description="Data set volume.")
    models: ModelStorageSpec = Field(default_factory=ModelStorageSpec, description="Model weights volume.")


class TrainingSpec(ApiModel):
    """Desired state of a SoundMind GRPO training run."""

    model: str = Field(
        "Qwen/Qwen2.5-Omni-7B",
        min_length=1,
        max_length=1024,
        description="Base model: a Hugging Face id, or a path on the models volume.",
    )
    dataset: DatasetSpec = Field(default_factory=DatasetSpec, description="Training data.")
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec, description="GRPO hyper-parameters.")
    reward: RewardSpec = Field(default_factory=RewardSpec, description="SoundMind-RL reward weights.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-pod resources and placement.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Volumes for checkpoints, data and models.")
    image: str = Field(TRAINER_IMAGE, min_length=1, max_length=1024, description="Trainer container image.")
    hf_token_secret: SecretKeyRef | None = Field(
        None, description="Secret key holding a Hugging Face token (never a literal token)."
    )
    queue_name: str = Field(
        "",
        max_length=63,
        description="Kueue LocalQueue; when set, the Job is created suspended and Kueue admits it.",
    )
    suspend: bool = Field(False, description="Suspend the run: pods go away, checkpoints stay; resume continues.")
    max_retries: int = Field(
        3, ge=0, le=100, description="Whole-group restarts after a failure, each resuming from the last checkpoint."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, description="Fail the run when it has been active longer than this."
    )
    pending_timeout_seconds: int = Field(
        1800,
        ge=0,
        description="Fail with PendingTimeout when pods stay unschedulable this long (0: wait, with a condition).",
    )
    gang_timeout_seconds: int = Field(
        300,
        ge=0,
        description="Where neither Kubernetes' gang scheduling (PodGroup API) nor Kueue places the group "
        "all-or-nothing: release the GPUs of a group that is only partly placed for this long (suspend its "
        "Job, keep the attempt) and place it again later, with exponential backoff (0: never release).",
    )
    stall_timeout_seconds: int = Field(
        3600,
        ge=0,
        description="Mark the run Stalled when its step has not advanced for this long while running (0: never).",
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, description="Delete the finished run's Job (not its checkpoints) after this long."
    )
    extra_args: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        [],
        max_length=256,
        description="Raw verl overrides (key=value), appended last; the escape hatch.",
    )

    @property
    def total_gpus(self) -> int:
        return self.resources.nodes * self.resources.gpus_per_node

    @model_validator(mode="after")
    def _batch_divides_across_gpus(self) -> TrainingSpec:
        rollouts = self.algorithm.train_batch_size * self.algorithm.rollout_n
        if rollouts % self.total_gpus:
            raise ValueError(
                _BATCH_MESSAGE + f" (got {self.algorithm.train_batch_size} × "
                f"{self.algorithm.rollout_n} = {rollouts} over {self.total_gpus} GPUs)"
            )
        return self


_BATCH_MESSAGE = (
    "algorithm.trainBatchSize × algorithm.rolloutN must be divisible by resources.nodes × "
    "resources.gpusPerNode, so every GPU gets the same number of rollouts"
)

# CEL twins of the validators above, evaluated by the API server at admission. The CRD generator
# also makes every spec field not in MUTABLE_SPEC_FIELDS immutable.
TRAINING_SPEC_RULES = [
    {
        "rule": "(self.algorithm.trainBatchSize * self.algorithm.rolloutN) % "
        "(self.resources.nodes * self.resources.gpusPerNode) == 0",
        "message": _BATCH_MESSAGE,
        "fieldPath": ".algorithm.trainBatchSize",
    },
]


Phase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]
# Who keeps a group from holding GPUs it cannot use: Kubernetes' scheduler (a PodGroup with a gang
# policy), Kueue's admission (queueName), or the operator's own guard (gangTimeoutSeconds).
GangLevel = Literal["PodGroup", "Kueue", "Operator"]


class TrainingProgress(ApiModel):
    step: int | None = Field(None, ge=0, description="Last completed GRPO step (written by the trainer).")
    total_steps: int | None = Field(None, ge=0, description="Steps in the whole run.")
    epoch: int | None = Field(None, ge=0, description="Current epoch.")
    reward_mean: float | None = Field(None, description="Mean SoundMind-RL reward of the last step.")
    val_accuracy: float | None = Field(None, description="Last validation accuracy (0-1).")
    updated_at: str | None = Field(None, description="When the trainer last reported (RFC 3339).")


class CheckpointStatus(ApiModel):
    step: int | None = Field(None, ge=0, description="Step of the newest complete checkpoint.")
    path: str | None = Field(None, description="Directory of that checkpoint on the checkpoint volume.")


class ModelStatus(ApiModel):
    path: str | None = Field(
        None,
        description="Hugging Face directory of the trained model on the checkpoint volume (full Qwen2.5-Omni "
        "config, thinker weights, processor), exported when the run succeeds; what vLLM serves.",
    )
    step: int | None = Field(None, ge=0, description="The training step of the checkpoint it was exported from.")


class TrainingStatus(ApiModel):
    """Observed state. `progress`, `checkpoint` and `model` belong to the trainer; the rest to the operator."""

    phase: Phase | None = Field(None, description="Pending, Queued, Running, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field([], description="Kubernetes-style conditions.")
    observed_generation: int | None = Field(None, description="The spec generation last reconciled.")
    start_time: str | None = Field(None, description="When the first attempt started running.")
    completion_time: str | None = Field(None, description="When the run succeeded.")
    attempt: int | None = Field(None, ge=1, description="Current attempt (1 + retries so far).")
    job_name: str | None = Field(None, description="The Job of the current attempt.")
    progress: TrainingProgress | None = Field(None, description="RL progress reported by the trainer.")
    checkpoint: CheckpointStatus | None = Field(None, description="Newest checkpoint reported by the trainer.")
    model: ModelStatus | None = Field(
        None, description="The exported Hugging Face model (written by the trainer on success); what servings serve."
    )
    gang: GangLevel | None = Field(
        None,
        description="What places the group all-or-nothing: PodGroup (Kubernetes' gang scheduling), Kueue "
        "(queueName: Kueue's admission), or Operator (the operator releases a partial placement after "
        "gangTimeoutSeconds).",
    )
    gang_releases: int | None = Field(
        None, ge=0, description="Partial placements of the current attempt the operator released (level Operator)."
    )
    gang_retry_at: str | None = Field(
        None, description="When the operator places a released group again (RFC 3339; level Operator)."
    )
    gpu_seconds: float | None = Field(
        None,
        ge=0,
        description="GPUs × seconds the whole group ran, over all attempts (a partial placement is not counted).",
    )
    gpu_seconds_updated_at: str | None = Field(
        None, description="Until when gpuSeconds is counted (RFC 3339); the operator adds only later pod time."
    )
