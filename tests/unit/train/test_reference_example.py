"""examples/training-reference.yaml holds the reference launch script's settings, and README's table
("Training: the reference settings") says, for every setting where examples/training.yaml differs,
the value of the script, of each example, and why. Both examples are rendered by `soundmind train
--dry-run` as a user runs it, their verl commands composed against verl's own config, and each
row of the table read back from what verl would get: a table that drifts from either example, or
an example whose extraArgs the renderer no longer accepts, fails here."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from soundmind.train import contract
from soundmind.train.verl_config import compose

ROOT = Path(__file__).resolve().parents[3]
TABLE_HEADING = "### Training: the reference settings"
COLUMNS = [
    "setting",
    "verl key",
    "reference script",
    "training-reference.yaml",
    "training.yaml",
    "why training.yaml differs",
]
# The one value the reference example cannot take from the script (examples/training-reference.yaml says why).
CANNOT_FIT = {"data.max_prompt_length"}


def rendered_arguments(example: str, tmp_path: Path) -> list[str]:
    """The verl overrides `soundmind train --dry-run` prints for an example, in order."""
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(ROOT / "examples" / example)]
    command += ["--dry-run", "--checkpoints-root", str(tmp_path / "ckpt")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDMIND_")}
    env |= {contract.ENV_TRAINING_NAME: "example", contract.ENV_NAMESPACE: "ml"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    script = done.stdout.split("\n# when verl succeeds", 1)[0]
    words = shlex.split(script.replace("\\\n", " "), comments=True)
    return words[words.index("verl.trainer.main_ppo") + 1 :]


def readme_table() -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split(TABLE_HEADING, 1)[1]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    lines = lines[first:end]
    header, _, *rows = ([cell.strip().strip("`") for cell in line.strip().strip("|").split("|")] for line in lines)
    assert header == COLUMNS, header
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("examples")
    return {name: compose(rendered_arguments(name, tmp_path)) for name in ("training-reference.yaml", "training.yaml")}


def cell(text: str):
    return yaml.safe_load(re.sub(r"\s*\(.*\)$", "", text))  # "400 (cannot hold the audio)" -> 400


def test_the_table_says_what_each_example_gives_verl(composed):
    rows = readme_table()
    assert {row["verl key"] for row in rows} >= {
        "data.train_batch_size",
        "actor_rollout_ref.rollout.n",
        "data.max_prompt_length",
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        "actor_rollout_ref.model.use_remove_padding",
        "actor_rollout_ref.actor.fsdp_config.param_offload",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload",
        "actor_rollout_ref.ref.fsdp_config.param_offload",
    }
    for row in rows:
        key = row["verl key"]
        for example in composed:
            assert OmegaConf.select(composed[example], key) == cell(row[example]), (key, example)
        assert cell(row["training.yaml"]) != cell(row["reference script"]), f"{key}: not a difference"
        assert row["why training.yaml differs"], key


def test_the_reference_example_differs_from_the_script_only_where_the_audio_cannot_fit(composed):
    differs = {
        row["verl key"]
        for row in readme_table()
        if cell(row["training-reference.yaml"]) != cell(row["reference script"])
    }
    assert differs == CANNOT_FIT
    reference = composed["training-reference.yaml"]
    # 4096 tokens: 130 s of audio at 25 tokens per second, the question's text and the chat template.
    assert OmegaConf.select(reference, "data.max_prompt_length") >= 130 * 25 + 500
