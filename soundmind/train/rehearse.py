"""`soundmind train --rehearse`: the run's start, rehearsed on CPU from the rendered command alone.

The verl arguments `soundmind train --dry-run` prints, and nothing else, are composed with verl's own
Hydra entry (`ppo_trainer` from the verl wheel's config directory, as `verl.trainer.main_ppo` does).
Then each object the run builds before its first CUDA kernel is built through verl's and vLLM's own
code, one step each (`STEPS`). A step prints one line: `built`, `failed` (with the exception) or
`stopped-on-CPU` (how far it got, and what needs a GPU). The exit code is 1 when a step failed.

It needs the trainer image (verl, vLLM, torch, Ray) and the data set prepared; a GPU is neither
needed nor used. verl's and vLLM's own log lines go to stderr, so stdout holds the step lines only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import socket
import sys
from collections.abc import Callable
from copy import deepcopy

from soundmind.train.render import VERL_ENTRYPOINT, LaunchPlan
from soundmind.train.verl_config import installed_schema

BUILT, FAILED, STOPPED = "built", "failed", "stopped-on-CPU"
VERL_CONFIG_NAME = "ppo_trainer"  # main_ppo's @hydra.main(config_name=...)


class StoppedOnCPU(Exception):
    """The step got as far as a CPU allows; the message says how far, and what needs the GPU."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    step: str
    status: str
    detail: str

    def __str__(self) -> str:
        return f"{self.step}: {self.status}: {self.detail}"


class Run:
    """What the steps share, each built once when first asked for."""

    def __init__(self, plan: LaunchPlan):
        self.plan = plan

    @functools.cached_property
    def config(self):
        return compose(verl_arguments(self.plan))

    @functools.cached_property
    def model_config(self):
        """verl's HFModelConfig, as every verl role builds it from `actor_rollout_ref.model`."""
        from verl.utils.config import omega_conf_to_dataclass

        return omega_conf_to_dataclass(self.config.actor_rollout_ref.model)


def verl_arguments(plan: LaunchPlan) -> list[str]:
    """The overrides of the rendered command: everything after `python -m verl.trainer.main_ppo`."""
    if plan.command[1:3] != ["-m", VERL_ENTRYPOINT]:
        raise ValueError(f"the rendered command does not run {VERL_ENTRYPOINT}: {plan.command[:3]}")
    return plan.command[3:]


def compose(arguments: list[str]):
    """verl's config as main_ppo's Hydra entry composes it from the wheel's config directory."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = str(installed_schema().parent)  # verl/trainer/config in the pinned wheel, not the shipped copy
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name=VERL_CONFIG_NAME, overrides=arguments)


# The steps, in the order the run meets them. Each returns what it built, in one line.


def verl_config(run: Run) -> str:
    from omegaconf import OmegaConf

    OmegaConf.resolve(deepcopy(run.config))  # the TaskRunner resolves every interpolation first
    return f"{len(verl_arguments(run.plan))} rendered overrides composed with verl's {VERL_CONFIG_NAME} and resolved"


def model_config(run: Run) -> str:
    config = run.model_config
    return (
        f"HFModelConfig {config.architectures[0]}, processor {type(config.processor).__name__}, "
        f"tokenizer {type(config.tokenizer).__name__} ({len(config.tokenizer)} tokens), "
        f"attention {config.hf_config._attn_implementation}"
    )


def actor_and_reference(run: Run) -> str:
    """Both modules through verl's FSDP engine (`EngineRegistry` -> `_build_module`), with the engine
    configs the ActorRolloutRefWorker derives from the rendered config. FSDP wrapping needs CUDA."""
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import MtpConfig

    _one_process_group()
    built = []
    actor = omega_conf_to_dataclass(run.config.actor_rollout_ref.actor)
    reference = omega_conf_to_dataclass(_reference_section(run.config.actor_rollout_ref))
    for role, role_config in (("actor", actor), ("ref", reference)):
        model = deepcopy(run.model_config)
        if role == "ref":
            model.mtp = MtpConfig(enable=False)  # as init_model: the reference never runs MTP
        module = _build_module(model, role_config)
        parameters = sum(parameter.numel() for parameter in module.parameters())
        dtype = next(module.parameters()).dtype
        checkpointing = "on" if getattr(module, "is_gradient_checkpointing", False) else "off"
        built.append(
            f"{role} {type(module).__name__} ({parameters} parameters, {dtype}, attention "
            f"{module.config._attn_implementation}, gradient checkpointing {checkpointing})"
        )
    return "; ".join(built)


def _reference_section(section):
    """`actor_rollout_ref.ref` with the keys verl's ActorRolloutRefWorker.init_model renames before it
    builds the reference's ActorConfig."""
    from omegaconf import open_dict

    ref = deepcopy(section.ref)
    with open_dict(ref):
        ref.ppo_mini_batch_size = section.actor.ppo_mini_batch_size
        ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
        ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
        ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
        ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
    return ref


def _build_module(model_config, role_config):
    """What verl's TrainingWorker does with a role's config up to the module: its engine from the
    registry, then the engine's own `_build_module` (the FSDP wrap after it needs CUDA)."""
    from verl.trainer.config.config import CheckpointConfig
    from verl.workers.engine import EngineRegistry

    engine_config = role_config.engine
    engine_config.use_remove_padding = model_config.get("use_remove_padding", False)
    engine_config.use_fused_kernels = model_config.get("use_fused_kernels", False)
    model_config.model_type = "language_model"
    engine = EngineRegistry.new(
        model_type="language_model",
        backend=engine_config.strategy,
        model_config=model_config,
        engine_config=engine_config,
        optimizer_config=role_config.optim,
        checkpoint_config=getattr(role_config, "checkpoint", None) or CheckpointConfig(),
    )
    return engine._build_module()


def _one_process_group() -> None:
    """The engine asks torch.distributed for its rank: one gloo process stands in for the NCCL group."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


def grpo_checks(run: Run) -> str:
    """main_ppo's `validate_config`, critic-free, then the mini-batch split verl's actor update makes:
    `ppo_mini_batch_size` x rollout.n sequences over the data-parallel ranks, each rank's share of a
    step cut into mini-batches by verl's `make_iterator`."""
    import torch
    from tensordict import TensorDict
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.tensordict_utils import make_iterator

    config = run.config
    if need_critic(config):
        raise ValueError(f"algorithm.adv_estimator {config.algorithm.adv_estimator} trains a critic; GRPO has none")
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=False)
    trainer, actor, rollout = config.trainer, config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    ranks = trainer.nnodes * trainer.n_gpus_per_node  # FSDP without sequence parallelism: one rank per GPU
    mini_batch = actor.ppo_mini_batch_size * rollout.n
    if mini_batch % ranks:  # TrainingWorker.train_batch asserts this
        raise ValueError(f"a mini-batch of {mini_batch} sequences does not split over {ranks} ranks")
    step = config.data.train_batch_size * rollout.n
    if step % ranks:
        raise ValueError(f"a step of {step} sequences does not split over {ranks} ranks")
    share = TensorDict({"rows": torch.zeros(step // ranks)}, batch_size=[step // ranks])
    updates = sum(1 for _ in make_iterator(share, mini_batch // ranks, epochs=actor.ppo_epochs))
    return (
        f"{trainer.nnodes}x{trainer.n_gpus_per_node}: {step} sequences a step ({step // ranks} per GPU), "
        f"mini-batches of {mini_batch} ({mini_batch // ranks} per GPU), {updates} update(s) a step, no critic, "
        f"reference policy {'on' if need_reference_policy(config) else 'off'}"
    )


def rollout_server(run: Run) -> str:
    """verl's vLLM replica and server for replica 0, node 0, as verl's LLM server manager creates them,
    then the server's `launch_server` up to the engine: the vLLM command line verl builds, parsed by
    vLLM's own parser, and vLLM's EngineArgs -> VllmConfig."""
    import ray

    from soundmind.serve.vllm_args import cpu_platform_without_gpu

    # Without a GPU, vLLM's CLI parser and configs take vLLM's CPU platform for their device defaults.
    on_cpu = cpu_platform_without_gpu()
    platform = "vLLM's CPU platform for CUDA" if on_cpu else "vLLM's platform"
    from verl.workers.rollout.replica import RolloutMode, get_rollout_replica_class
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

    class RehearsedServer(vLLMHttpServer):
        """verl's server, stopped where its `run_server` would start vLLM's engine."""

        async def run_server(self, args):
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.usage.usage_lib import UsageContext

            engine_args = AsyncEngineArgs.from_cli_args(args)
            summary = (
                f"max_model_len {self.config.max_model_len} (thinker context), tensor parallel "
                f"{engine_args.tensor_parallel_size}, dtype {engine_args.dtype}"
            )
            if on_cpu and engine_args.enable_sleep_mode:  # CUDA has it; vLLM's CPU platform refuses it
                engine_args = dataclasses.replace(engine_args, enable_sleep_mode=False)
                summary += ", sleep mode on (off here: vLLM's CPU platform has none)"
            model = engine_args.create_model_config()
            summary += f", vLLM ModelConfig {model.architecture} ({model.max_model_len} tokens)"
            try:
                engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
            except Exception as exc:  # noqa: BLE001 - past the model, vLLM's config is the device's
                raise StoppedOnCPU(f"{summary}; VllmConfig needs the GPU ({platform}): {_one_line(exc)}") from None
            raise StoppedOnCPU(f"{summary}, VllmConfig built ({platform}); the engine itself needs the GPU")

    section = run.config.actor_rollout_ref
    replica = get_rollout_replica_class(section.rollout.name)(
        replica_rank=0,
        config=section.rollout,
        model_config=section.model,
        gpus_per_node=section.rollout.n_gpus_per_node,
    )
    if not ray.is_initialized():  # the server is a Ray actor: it asks Ray for its job and node address
        ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    with _environment_kept():  # the server sets CUDA_VISIBLE_DEVICES and friends for its process
        server = RehearsedServer(
            config=replica.config,
            model_config=replica.model_config,
            rollout_mode=RolloutMode.HYBRID,
            workers=[],
            replica_rank=0,
            node_rank=0,
            gpus_per_node=replica.gpus_per_replica_node,
            nnodes=replica.nnodes,
            cuda_visible_devices=",".join(str(gpu) for gpu in range(replica.gpus_per_replica_node)),
        )
        asyncio.run(server.launch_server())
    raise AssertionError("verl's launch_server returned without starting an engine")


@contextlib.contextmanager
def _environment_kept():
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def reward(run: Run) -> str:
    """The reward as verl loads a custom reward (`custom_reward_function.path`, `.name`, `.reward_kwargs`),
    scoring one well-formed rollout that answers the first training row's label."""
    import pyarrow.parquet as pq
    from verl.trainer.ppo.reward import get_custom_reward_fn

    score = get_custom_reward_fn(run.config)
    if score is None:
        raise ValueError("reward.custom_reward_function.path is not set")
    (row,) = pq.read_table(run.config.data.train_files).slice(0, 1).to_pylist()
    label = row["reward_model"]["ground_truth"]
    rollout = f"<think>The premises do not settle it either way, so I answer from them.</think>\nAnswer: {label}"
    result = score(
        data_source=row["data_source"], solution_str=rollout, ground_truth=label, extra_info=row["extra_info"]
    )
    parts = ", ".join(f"{name} {result[name]:g}" for name in ("format", "answer", "length"))
    loaded = run.config.reward.custom_reward_function
    return f"{loaded.name} from {loaded.path} scored one rollout {result['score']:g} ({parts})"


def dataset(run: Run) -> str:
    """verl's dataset class (the rendered data.custom_cls) over the prepared parquet, and one batch of
    each of the trainer's loaders, built as verl's trainer builds them."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    data, model = run.config.data, run.model_config
    batches = []
    for split, files, is_train in (("train", data.train_files, True), ("val", data.val_files, False)):
        rows = create_rl_dataset(files, data, model.tokenizer, model.processor, is_train=is_train)
        size = (data.get("gen_batch_size") or data.train_batch_size) if is_train else (data.val_batch_size or len(rows))
        loader = StatefulDataLoader(
            dataset=rows,
            batch_size=size,
            num_workers=data.dataloader_num_workers,
            drop_last=is_train,
            collate_fn=collate_fn,
            **({"sampler": create_rl_sampler(data, rows)} if is_train else {"shuffle": data.validation_shuffle}),
        )
        batch = next(iter(loader))
        batches.append(f"{split} {len(batch['raw_prompt'])} of {len(rows)} rows")
    return f"{type(rows).__name__}: one batch each, {', '.join(batches)}"


STEPS: list[Callable[[Run], str]] = [
    verl_config,
    model_config,
    actor_and_reference,
    grpo_checks,
    rollout_server,
    reward,
    dataset,
]


def attempt(step: Callable[[Run], str], run: Run) -> Outcome:
    name = step.__name__.replace("_", "-")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # verl prints; stdout keeps one line per step
            detail = step(run)
    except StoppedOnCPU as stop:
        return Outcome(name, STOPPED, str(stop))
    except Exception as exc:  # noqa: BLE001 - a step's failure is its result
        return Outcome(name, FAILED, _one_line(exc))
    return Outcome(name, BUILT, detail)


def rehearse(plan: LaunchPlan, steps: list[Callable[[Run], str]] = STEPS) -> list[Outcome]:
    run = Run(plan)
    outcomes = []
    for step in steps:
        outcome = attempt(step, run)
        print(outcome, flush=True)
        outcomes.append(outcome)
    return outcomes


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
