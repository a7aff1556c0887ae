"""`soundmind train --config FILE` reads the file as `kubectl apply` hands it to the API server (issue 21,
point 5): JSON as JSON, YAML with YAML 1.2's numbers, so `3e-7` is the float the CRD accepts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soundmind.errors import ConfigError
from soundmind.train import contract
from soundmind.train.config import load_spec

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("spec.json", '{"algorithm": {"learningRate": 3e-7}}'),
        ("spec.json", '{"algorithm": {"learningRate": 3E-07}}'),
        ("spec.yaml", "algorithm:\n  learningRate: 3e-7\n"),
        ("spec.yaml", "algorithm: {learningRate: 3E-7}\n"),
        ("spec.yaml", "algorithm:\n  learningRate: 0.0000003\n"),
        ("spec.yaml", "algorithm:\n  learningRate: 3.0e-7\n"),
        ("spec.txt", '  {"algorithm": {"learningRate": 3e-7}}'),  # kubectl decides by the first character
    ],
)
def test_an_exponent_without_a_dot_is_a_number(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert load_spec(path).algorithm.learning_rate == 3e-7


@pytest.mark.parametrize(("text", "value"), [("klCoef: 1e-3", 1e-3), ("klCoef: +2E-3", 0.002), ("klCoef: .5", 0.5)])
def test_yaml_1_2_floats_in_other_number_fields(tmp_path, text, value):
    path = tmp_path / "spec.yaml"
    path.write_text(f"algorithm: {{{text}}}\n")
    assert load_spec(path).algorithm.kl_coef == value


def test_a_quoted_exponent_stays_a_string_and_is_refused_as_one(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text('algorithm:\n  learningRate: "3e-7"\n')
    with pytest.raises(ConfigError) as raised:
        load_spec(path)
    assert raised.value.field == "algorithm.learningRate" and "got '3e-7'" in raised.value.reason


def test_broken_json_is_refused_as_json_with_its_line_and_column(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"algorithm": {"learningRate": 3e-7,}}')
    with pytest.raises(ConfigError) as raised:
        load_spec(path)
    assert raised.value.field == "--config"
    assert raised.value.reason.startswith(f"{path} is not valid JSON: Expecting property name") and "column 37" in (
        raised.value.reason
    )


def test_the_example_manifest_as_json_with_an_exponent_renders_that_learning_rate(tmp_path):
    """The newcomer's path: the example as `kubectl get -o json` writes it, through the real command."""
    manifest = yaml.safe_load((ROOT / "examples" / "training.yaml").read_text())
    text = json.dumps(manifest).replace('"learningRate": 3e-07', '"learningRate": 3e-7')
    assert '"learningRate": 3e-7' in text
    path = tmp_path / "training.json"
    path.write_text(text)
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(path), "--dry-run"]
    command += ["--checkpoints-root", str(tmp_path / "ckpt")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOUNDMIND_")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "actor_rollout_ref.actor.optim.lr=3e-07" in done.stdout
    assert contract.ENV_TRAINING_NAME in done.stdout  # the dry run's own note: it ran to the end
