"""TrainingSpec -> the exact verl GRPO command and environment, validated against verl's own config.

Every override names the spec field it comes from; `extraArgs` come last and may change anything
except a value a spec field decides (then the error says which field to set instead). The whole list
is composed against verl's shipped schema (`verl_config.compose`), so a typo or a wrong type is a
ConfigError at render time, not a crash after the GPUs are allocated.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from soundmind.api.training import TrainingSpec
from soundmind.errors import ConfigError
from soundmind.models import (
    QWEN2_5_OMNI_ADAPTER,
    QWEN2_5_OMNI_CONTEXT,
    QWEN2_5_OMNI_MODEL_TYPE,
    QWEN2_5_OMNI_OVERRIDE_CONFIG,
    attention_implementation,
    thinker_context,
)
from soundmind.train import contract, export
from soundmind.train.config import PodIdentity
from soundmind.train.dataset import DatasetFiles, longest_prompt, row_count
from soundmind.train.verl_config import OverrideError, compose, format_value

VERL_ENTRYPOINT = "verl.trainer.main_ppo"
REWARD_MODULE = "soundmind.reward"
REWARD_FUNCTION = "compute_score"
AUDIO_DATASET_CLASS = ("pkg://soundmind.data.verl_dataset", "AudioRLHFDataset")  # decodes prepared audio rows
AUDIO_KEY = "audios"  # the column soundmind.data.prepare writes
PROJECT_NAME = "soundmind"
MIN_TOKENS_PER_GPU = 16384  # verl's default ppo_max_token_len_per_gpu


@dataclass(frozen=True)
class Override:
    key: str
    value: object
    field: str = ""  # the spec field that decides it; "" for a SoundMind default extraArgs may change
    add: bool = False  # not in verl's schema: Hydra's "+key=value"

    def __str__(self) -> str:
        return f"{'+' if self.add else ''}{self.key}={format_value(self.value)}"


@dataclass(frozen=True)
class LaunchPlan:
    command: list[str]
    env: dict[str, str]  # set for the driver, on top of the pod's environment
    checkpoint_dir: str
    log_path: str  # verl's file logger (VERL_FILE_LOGGER_PATH) for this attempt
    total_steps: int | None  # None until the data set is prepared
    merger: list[str]  # verl's model merger, which exports the last checkpoint on success (soundmind.train.export)
    notes: list[str] = field(default_factory=list)

    @property
    def working_dir(self) -> str:
        """Where verl's driver runs: verl's Hydra entry writes `outputs/<date>/<time>/.hydra/` under its
        working directory, and the image's own (/workspace) is root's, so the driver runs in the
        attempt logs' directory on the checkpoint volume, writable by the pod's user."""
        return str(Path(self.log_path).parent)

    def export_command(self) -> list[str]:
        """The export of the final checkpoint (global_step_<total steps>), as the head will run it."""
        step = self.total_steps if self.total_steps is not None else "N"
        return [*self.merger, *export.merge_arguments(self.checkpoint_dir, step)]


def reward_module_path() -> str:
    """The installed soundmind reward's file, which verl loads with `custom_reward_function.path`."""
    spec = importlib.util.find_spec(REWARD_MODULE)
    if spec is None or spec.origin is None:
        raise ConfigError("reward", f"the {REWARD_MODULE} module is not installed")
    return spec.origin


def rollout_tensor_parallel(gpus_per_node: int) -> int:
    return 2 if gpus_per_node % 2 == 0 else 1  # verl's default of 2 cannot split an odd GPU count


def overrides(spec: TrainingSpec, identity: PodIdentity, dataset: DatasetFiles, checkpoint_dir: str) -> list[Override]:
    algorithm, resources, checkpoints = spec.algorithm, spec.resources, spec.storage.checkpoints
    sequence_length = algorithm.max_prompt_length + algorithm.max_response_length
    token_budget = max(MIN_TOKENS_PER_GPU, sequence_length)
    model = model_overrides(spec.model)
    _check_context(spec, model, sequence_length)
    rendered = [
        Override("algorithm.adv_estimator", "grpo"),
        Override("algorithm.use_kl_in_reward", False),
        *model,
        Override("actor_rollout_ref.rollout.name", "vllm"),
        Override("actor_rollout_ref.rollout.n", algorithm.rollout_n, "algorithm.rolloutN"),
        Override(
            "actor_rollout_ref.rollout.tensor_model_parallel_size", rollout_tensor_parallel(resources.gpus_per_node)
        ),
        Override("actor_rollout_ref.actor.optim.lr", algorithm.learning_rate, "algorithm.learningRate"),
        Override("actor_rollout_ref.actor.use_kl_loss", True),
        Override("actor_rollout_ref.actor.kl_loss_type", "low_var_kl"),
        Override("actor_rollout_ref.actor.kl_loss_coef", algorithm.kl_coef, "algorithm.klCoef"),
        # One policy update per step (on-policy GRPO), micro-batches sized by tokens rather than rows.
        Override("actor_rollout_ref.actor.ppo_mini_batch_size", algorithm.train_batch_size, "algorithm.trainBatchSize"),
        Override("actor_rollout_ref.actor.use_dynamic_bsz", True),
        Override("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", token_budget),
        Override("data.train_files", str(dataset.train), "dataset.path"),
        Override("data.val_files", str(dataset.val), "dataset.path"),
        Override("data.train_batch_size", algorithm.train_batch_size, "algorithm.trainBatchSize"),
        Override("data.max_prompt_length", algorithm.max_prompt_length, "algorithm.maxPromptLength"),
        Override("data.max_response_length", algorithm.max_response_length, "algorithm.maxResponseLength"),
        # Unset, verl validates the whole dev split in one batch, and the processor pads every clip's
        # features to 300 s (~15.4 MB of fp32 each): 606 rows hold ~9.3 GB at once. One training
        # step's sequences at a time bound validation by what a training step holds anyway.
        Override("data.val_batch_size", algorithm.train_batch_size * algorithm.rollout_n),
    ]
    if spec.dataset.modality != "text":
        rendered += [
            Override("data.audio_key", AUDIO_KEY, "dataset.modality"),
            Override("data.custom_cls.path", AUDIO_DATASET_CLASS[0], "dataset.modality"),
            Override("data.custom_cls.name", AUDIO_DATASET_CLASS[1], "dataset.modality"),
        ]
    rendered += [
        Override("reward.custom_reward_function.path", reward_module_path()),
        Override("reward.custom_reward_function.name", REWARD_FUNCTION),
        *(
            Override(f"reward.custom_reward_function.reward_kwargs.{name}", weight, f"reward.{alias}", add=True)
            for name, alias, weight in _reward_weights(spec)
        ),
        Override("trainer.total_epochs", algorithm.epochs, "algorithm.epochs"),
        Override("trainer.nnodes", resources.nodes, "resources.nodes"),
        Override("trainer.n_gpus_per_node", resources.gpus_per_node, "resources.gpusPerNode"),
        Override("trainer.default_local_dir", checkpoint_dir, "storage.checkpoints"),
        Override("trainer.save_freq", checkpoints.save_every, "storage.checkpoints.saveEvery"),
        Override("trainer.test_freq", checkpoints.save_every),  # validation accuracy with every checkpoint
        Override("trainer.max_actor_ckpt_to_keep", checkpoints.keep, "storage.checkpoints.keep"),
        Override("trainer.resume_mode", "auto", "maxRetries"),  # each retry resumes from the last checkpoint
        Override("trainer.logger", ["console", "file"]),
        Override("trainer.project_name", PROJECT_NAME),
        Override("trainer.experiment_name", f"{identity.namespace}.{identity.training_name}"),
    ]
    return rendered


MODEL_OVERRIDE_CONFIG = "actor_rollout_ref.model.override_config"
CONTEXT_KEY = f"{MODEL_OVERRIDE_CONFIG}.max_position_embeddings"


def model_overrides(model: str) -> list[Override]:
    """The policy model, loaded through SoundMind's Qwen2.5-Omni adapter (soundmind.models.qwen2_5_omni),
    which verl imports from `external_lib` in every process that builds the model's config.

    `override_config` also carries what verl 0.9.1 would otherwise get wrong for Omni: the attention
    implementation (verl asks for FlashAttention 2 when none is named, and the trainer image has no
    flash-attn) and `max_position_embeddings`, which Omni keeps under `thinker_config.text_config`,
    where verl's rollout server does not look (it would stop with "max_position_embeddings not found")."""
    return [
        Override("actor_rollout_ref.model.path", model, "model"),
        Override("actor_rollout_ref.model.external_lib", QWEN2_5_OMNI_ADAPTER),
        *(
            Override(f"{MODEL_OVERRIDE_CONFIG}.{key}", value, add=True)
            for key, value in QWEN2_5_OMNI_OVERRIDE_CONFIG.items()
        ),
        Override(f"{MODEL_OVERRIDE_CONFIG}.attn_implementation", attention_implementation(), add=True),
        Override(CONTEXT_KEY, context_length(model), "model", add=True),
    ]


def context_length(model: str) -> int:
    """The thinker's context, from the checkpoint's config.json when `model` is a checkpoint on this
    machine, else (a hub id) that of the published Qwen2.5-Omni checkpoints."""
    config = _checkpoint_config(model)
    if config is None:
        return QWEN2_5_OMNI_CONTEXT
    context = thinker_context(config)
    if isinstance(context, bool) or not isinstance(context, int) or context <= 0:
        raise ConfigError(
            "model",
            f"{Path(model) / 'config.json'} has thinker_config.text_config.max_position_embeddings {context!r}; "
            "a Qwen2.5-Omni checkpoint has a positive integer there",
        )
    return context


def _check_context(spec: TrainingSpec, model: list[Override], sequence_length: int) -> None:
    """vLLM's max_model_len is the thinker's context: a prompt and its response must fit in it."""
    context = next(override.value for override in model if override.key == CONTEXT_KEY)
    if sequence_length > context:
        raise ConfigError(
            "algorithm.maxResponseLength",
            f"maxPromptLength {spec.algorithm.max_prompt_length} + maxResponseLength "
            f"{spec.algorithm.max_response_length} = {sequence_length} tokens do not fit the {context}-token "
            f"context of {spec.model}; lower either so that they sum to at most {context}",
        )


def _checkpoint_config(model: str) -> dict | None:
    """A checkpoint's config.json on this machine; None for a hub id (or a path not mounted here)."""
    config = Path(model) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("model", f"cannot read {config}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("model", f"{config} holds a {type(data).__name__}, not a model config")
    return data


def _check_model(model: str) -> None:
    """A checkpoint on the models volume must be a Qwen2.5-Omni (a hub id is resolved by verl later)."""
    config = _checkpoint_config(model)
    if config is None:
        return
    model_type = config.get("model_type")
    if model_type != QWEN2_5_OMNI_MODEL_TYPE:
        raise ConfigError(
            "model",
            f"{model} is a {model_type!r} checkpoint; the trainer trains Qwen2.5-Omni "
            f"(model_type {QWEN2_5_OMNI_MODEL_TYPE!r}), e.g. Qwen/Qwen2.5-Omni-7B or a model it exported",
        )


def _reward_weights(spec: TrainingSpec) -> list[tuple[str, str, float]]:
    fields = type(spec.reward).model_fields
    return [(name, fields[name].alias, getattr(spec.reward, name)) for name in fields]


def _check_extra_args(spec: TrainingSpec, rendered: list[Override]) -> None:
    decided = {override.key: override.field for override in rendered if override.field}
    for position, text in enumerate(spec.extra_args):
        key = text.split("=", 1)[0].lstrip("+~")
        # The key itself, or a parent that would replace or delete it (`trainer=...`, `~trainer`).
        hit = key if key in decided else next((k for k in decided if k.startswith(f"{key}.")), None)
        if hit is not None:
            raise ConfigError(
                f"extraArgs[{position}]",
                f"{text!r} sets {hit}, which spec.{decided[hit]} decides; set spec.{decided[hit]} instead",
            )


def _validated_arguments(spec: TrainingSpec, rendered: list[Override]) -> list[str]:
    """The verl overrides with `extraArgs` last, composed against verl's schema."""
    _check_extra_args(spec, rendered)
    arguments = [str(override) for override in rendered] + list(spec.extra_args)
    try:
        config = compose(arguments)
    except OverrideError as exc:
        position = len(arguments) - len(spec.extra_args)
        where = f"extraArgs[{arguments.index(exc.override) - position}]" if exc.override in spec.extra_args else "spec"
        raise ConfigError(where, str(exc)) from None
    if "file" not in _loggers(config):
        raise ConfigError("extraArgs", "trainer.logger must include 'file': progress reporting reads verl's file log")
    return arguments


def _loggers(config) -> list:
    """trainer.logger as a list, whatever the overrides made of it (a string, a value, nothing)."""
    try:
        logger = OmegaConf.select(config, "trainer.logger")
    except OmegaConfBaseException:
        return []
    return list(logger) if isinstance(logger, ListConfig | list | tuple) else [logger]


def validate_overrides(spec: TrainingSpec) -> None:
    """What the operator checks before a Job exists: the whole verl command the pods would render,
    `extraArgs` included, against verl's schema. The data set is not read (the operator has no data
    volume); its checks (prompt budget, step count) stay with the pod. The training's name and
    namespace only fill string values (the experiment name, the checkpoint directory) that cannot
    make the command invalid, so a stand-in is used and the result holds for every training with
    this spec."""
    identity = PodIdentity(training_name="training", namespace="namespace", attempt=1, index=0, head_address="")
    dataset = DatasetFiles(directory=Path(spec.dataset.path), raw_root=None)
    checkpoint_dir = contract.checkpoint_dir(identity.training_name)
    _validated_arguments(spec, overrides(spec, identity, dataset, checkpoint_dir))


def render(
    spec: TrainingSpec,
    identity: PodIdentity,
    dataset: DatasetFiles,
    checkpoints_root: str = contract.CHECKPOINTS_MOUNT,
    python: str = sys.executable,
    ray_port: int = contract.RAY_HEAD_PORT,
) -> LaunchPlan:
    _check_model(spec.model)
    checkpoint_dir = contract.checkpoint_dir(identity.training_name, checkpoints_root)
    arguments = _validated_arguments(spec, overrides(spec, identity, dataset, checkpoint_dir))

    notes: list[str] = []
    total_steps = None
    if dataset.ready:
        total_steps = _total_steps(spec, dataset)
        _check_prompt_budget(spec, dataset)
    else:
        notes.append(f"{dataset.pending}; the prompt length and step count are checked when the pod starts")
    log_path = contract.attempt_log_path(checkpoint_dir, identity.attempt)
    plan = LaunchPlan(
        command=[python, "-m", VERL_ENTRYPOINT, *arguments],
        env=driver_env(identity, log_path, ray_port),
        checkpoint_dir=checkpoint_dir,
        log_path=log_path,
        total_steps=total_steps,
        merger=export.merger_program(python),
        notes=notes,
    )
    export.check_merge_arguments(plan.export_command()[len(plan.merger) :])
    return plan


def driver_env(identity: PodIdentity, log_path: str, ray_port: int = contract.RAY_HEAD_PORT) -> dict[str, str]:
    """Everything verl, Ray and NCCL need from the environment, decided here only."""
    head = "127.0.0.1" if identity.is_head else identity.head_address
    return {
        "RAY_ADDRESS": f"{head}:{ray_port}",
        "VERL_FILE_LOGGER_PATH": log_path,
        "NCCL_DEBUG": "WARN",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a hung collective fails the step instead of the deadline
        "HYDRA_FULL_ERROR": "1",
        "PYTHONUNBUFFERED": "1",  # the pod log shows verl's progress as it happens
        "TOKENIZERS_PARALLELISM": "false",
    }


def _total_steps(spec: TrainingSpec, dataset: DatasetFiles) -> int:
    rows = row_count(dataset.train)
    batch = spec.algorithm.train_batch_size
    if rows < batch:
        raise ConfigError(
            "algorithm.trainBatchSize", f"{batch} is more than the {rows} rows of {dataset.train}; set at most {rows}"
        )
    return rows // batch * spec.algorithm.epochs  # verl drops the last partial batch of each epoch


def _check_prompt_budget(spec: TrainingSpec, dataset: DatasetFiles) -> None:
    limit = spec.algorithm.max_prompt_length
    for path in (dataset.train, dataset.val):
        longest = longest_prompt(path)
        if longest is not None and longest.tokens > limit:
            raise ConfigError(
                "algorithm.maxPromptLength",
                f"{limit} tokens cannot hold the longest prompt of {path} ({longest.explain()}); "
                f"set at least {longest.tokens}",
            )
