"""Fixtures shared by the unit tiers that run verl's and vLLM's own code on a tiny Qwen2.5-Omni."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import tiny_omni


@pytest.fixture(scope="session")
def tiny_omni_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-Omni checkpoint in the hub's layout (tests/support/tiny_omni.py)."""
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
def omni_engine(omni_model_config, process_group):
    """verl's FSDP training engine for the tiny Omni, not initialised (that step needs CUDA): its
    `_build_module` loads the model as training does, its `prepare_model_inputs` packs micro-batches."""
    from verl.trainer.config.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    return FSDPEngineWithLMHead(
        omni_model_config,
        FSDPEngineConfig(strategy="fsdp2", use_torch_compile=False),
        FSDPOptimizerConfig(lr=1e-3),
        CheckpointConfig(),
    )
