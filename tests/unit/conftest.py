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
