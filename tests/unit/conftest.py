"""Fixtures shared by the unit tiers that run verl's and vLLM's own code on a tiny Qwen2.5-Omni."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import tiny_omni


@pytest.fixture(scope="session")
def tiny_omni_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-Omni checkpoint in the hub's layout (`soundmind model tiny-omni`)."""
    return tiny_omni.write(tmp_path_factory.mktemp("tiny-omni"))


@pytest.fixture(scope="session")
def process_group():
    """A one-process gloo group: verl's FSDP engine and checkpoint manager ask torch.distributed for
    their rank and world size."""
    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(scope="session")
def omni_model_config(tiny_omni_dir):
    """verl's `HFModelConfig` for the tiny Omni, as verl builds it from the rendered command: the
    model overrides the product renders (`soundmind.train.render.model_overrides`: the adapter, the
    attention implementation, the thinker's context), nothing added, composed against verl's schema
    and instantiated by verl (which imports the adapter through `external_lib`)."""
    from verl.utils.config import omega_conf_to_dataclass

    from soundmind.train.render import model_overrides
    from soundmind.train.verl_config import compose

    config = compose([str(override) for override in model_overrides(str(tiny_omni_dir))])
    return omega_conf_to_dataclass(config.actor_rollout_ref.model)


@pytest.fixture(scope="session")
def rendered_actor(tiny_omni_dir):
    """verl's actor config (`FSDPActorConfig`) as verl's actor worker builds it from the command
    `soundmind train --dry-run` renders for examples/training.yaml with the tiny Omni as model
    (tests/support/rendered.py): its FSDP strategy, mixed precision, optimizer and checkpoint contents
    are the run's."""
    from verl.utils.config import omega_conf_to_dataclass

    from tests.support.rendered import rendered_config

    return omega_conf_to_dataclass(rendered_config(str(tiny_omni_dir)).actor_rollout_ref.actor)


@pytest.fixture(scope="session")
def omni_engine(omni_model_config, rendered_actor, process_group):
    """verl's training engine for the tiny Omni, chosen and configured as verl's actor worker does
    (`ActorRolloutRefWorker.init_model`, `TrainingWorker`): the engine registered for the rendered
    `actor.strategy` (`fsdp`, FSDP1), with the rendered engine, optimizer and checkpoint configs. Not
    initialised (`initialize` moves the module to the GPU): its `_build_module` loads the model as
    training does, `_build_fsdp_module` wraps it as training does, `prepare_model_inputs` packs
    micro-batches."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    engine_config = rendered_actor.engine
    assert engine_config.strategy == rendered_actor.strategy  # FSDPActorConfig passes it on
    engine_config.use_remove_padding = omni_model_config.use_remove_padding  # as TrainingWorker sets it
    return FSDPEngineWithLMHead(omni_model_config, engine_config, rendered_actor.optim, rendered_actor.checkpoint)


@pytest.fixture(scope="session")
def build_sharded_module(omni_engine):
    """A fresh actor module as verl's engine builds it for training: `_build_module`, then
    `_build_fsdp_module` (FSDP1 here, with the rendered mixed precision, wrap policy, sharding and
    `use_orig_params`). Two things are replaced for a machine without a GPU: the device verl hands
    FSDP and its device mesh (verl's platform falls back to CUDA) become the CPU, over the gloo group;
    and FSDP1's guard that `sync_module_states` tensors be on the GPU (its broadcast is NCCL's there)
    is lifted, since gloo broadcasts CPU tensors (here, from the one rank to itself)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import _init_utils
    from verl.workers.engine.fsdp import transformer_impl

    def build():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(transformer_impl, "get_device_id", lambda: "cpu")
            patch.setattr(omni_engine, "device_mesh", init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
            patch.setattr(_init_utils, "_check_module_states_for_sync_module_states", lambda states: None)
            return omni_engine._build_fsdp_module(omni_engine._build_module())

    return build
