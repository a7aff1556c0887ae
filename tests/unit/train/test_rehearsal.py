"""The rehearsal of the real run (`soundmind train --rehearse`, soundmind.train.rehearse) from the
examples as `soundmind train --dry-run` renders them: only the model (the tiny random Omni in the hub
layout) and the data set (spoken by espeak-ng, prepared by `soundmind data prepare`) are pointed
elsewhere; nothing is added to the rendered command."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from soundmind.data import prepare, synth
from soundmind.train import contract
from soundmind.train.config import PodIdentity, load_spec
from soundmind.train.launcher import Options, plan_for
from tests.support.prerequisite import missing

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
POD_ENV = {contract.ENV_TRAINING_NAME: "alr-grpo", contract.ENV_NAMESPACE: "ml", contract.ENV_ATTEMPT: "1"}
STEP_NAMES = [
    "verl-config",
    "model-config",
    "actor-and-reference",
    "grpo-checks",
    "rollout-server",
    "reward",
    "dataset",
]

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def prepared_alr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`soundmind data synth` then `soundmind data prepare`: 32 spoken training problems (one batch of
    the example) and 8 dev ones, prepared for audio-text."""
    import shutil

    if shutil.which(synth.ESPEAK) is None:
        missing("espeak-ng is not installed (make deps)")
    raw = tmp_path_factory.mktemp("alr-raw")
    synth.synthesize(raw, synth.generated_annotations(32, seed=1), split="train")
    synth.synthesize(raw, synth.generated_annotations(8, seed=2), split="dev")
    out = tmp_path_factory.mktemp("alr") / "prepared"
    prepare.prepare(raw, out, "audio-text")
    return out


def example(name: str, **spec_changes) -> dict:
    manifest = yaml.safe_load((EXAMPLES / name).read_text())
    manifest["spec"].update(spec_changes)
    return manifest


def rehearse(tmp_path: Path, manifest: dict) -> subprocess.CompletedProcess:
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(manifest))
    command = [sys.executable, "-m", "soundmind", "train", "--config", str(config), "--rehearse"]
    command += ["--checkpoints-root", str(tmp_path / "ckpt")]
    return subprocess.run(command, env={**os.environ, **POD_ENV}, capture_output=True, text=True, timeout=840)


def test_every_object_the_example_run_builds_before_the_gpu_is_built(tmp_path, tiny_omni_dir, prepared_alr):
    manifest = example(
        "training.yaml",
        model=str(tiny_omni_dir),
        dataset={"path": str(prepared_alr), "modality": "audio-text"},
    )
    done = rehearse(tmp_path, manifest)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert [line.split(":", 1)[0] for line in lines] == STEP_NAMES, done.stdout
    outcomes = {line.split(":", 1)[0]: line.split(": ", 2)[1:] for line in lines}
    for step in STEP_NAMES:
        expected = "stopped-on-CPU" if step == "rollout-server" else "built"
        assert outcomes[step][0] == expected, done.stdout
    assert "attention sdpa" in outcomes["model-config"][1]
    actor, reference = outcomes["actor-and-reference"][1].split("; ")
    for module in (actor, reference):
        assert "Qwen2_5OmniForConditionalGeneration" in module and "attention sdpa" in module
    assert "gradient checkpointing on" in actor  # the rendered (verl default) setting, not a test's
    assert outcomes["grpo-checks"][1].startswith("1x8: 256 sequences a step (32 per GPU)")
    # The thinker's context from the checkpoint (tests/support/tiny_omni.py), where verl looks for it.
    assert "max_model_len 32768 (thinker context), tensor parallel 2" in outcomes["rollout-server"][1]
    assert "vLLM ModelConfig Qwen2_5OmniModel" in outcomes["rollout-server"][1]
    assert "(format 1, answer 2, length" in outcomes["reward"][1]  # the label answered, well formed
    assert "train 32 of 32 rows, val 8 of 8 rows" in outcomes["dataset"][1]


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("training.yaml", "1x8: 256 sequences a step (32 per GPU), mini-batches of 256 (32 per GPU), 1 update(s)"),
        ("training-2-nodes.yaml", "2x8: 256 sequences a step (16 per GPU), mini-batches of 256 (16 per GPU), 1 update"),
    ],
)
def test_verls_grpo_checks_pass_for_the_example_layouts(name, layout):
    from soundmind.train.rehearse import BUILT, grpo_checks
    from soundmind.train.rehearse import rehearse as run_steps

    spec = load_spec(EXAMPLES / name)
    identity = PodIdentity(training_name="alr-grpo", namespace="ml", attempt=1, index=0, head_address="")
    (outcome,) = run_steps(plan_for(spec, identity, Options(), prepare=False), steps=[grpo_checks])
    assert (outcome.status, outcome.detail[: len(layout)]) == (BUILT, layout)


def test_a_layout_verl_refuses_fails_the_rehearsal():
    from soundmind.train.rehearse import FAILED, grpo_checks
    from soundmind.train.rehearse import rehearse as run_steps

    spec = load_spec(EXAMPLES / "training-2-nodes.yaml")
    # 3 prompts x 8 rollouts = 24 sequences a step do not split over 16 GPUs.
    spec = spec.model_copy(update={"algorithm": spec.algorithm.model_copy(update={"train_batch_size": 3})})
    identity = PodIdentity(training_name="alr-grpo", namespace="ml", attempt=1, index=0, head_address="")
    (outcome,) = run_steps(plan_for(spec, identity, Options(), prepare=False), steps=[grpo_checks])
    assert outcome.status == FAILED
    assert "24" in outcome.detail and "16" in outcome.detail


def test_flash_attention_without_flash_attn_fails_the_module_step(tmp_path, tiny_omni_dir, prepared_alr, process_group):
    """What the run would meet if the command asked for FlashAttention 2 in an image without it."""
    from soundmind.train.rehearse import FAILED, actor_and_reference
    from soundmind.train.rehearse import rehearse as run_steps

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here: FlashAttention 2 builds")
    manifest = example(
        "training.yaml",
        model=str(tiny_omni_dir),
        dataset={"path": str(prepared_alr), "modality": "audio-text"},
        extraArgs=["actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2"],
    )
    config = tmp_path / "training.yaml"
    config.write_text(yaml.safe_dump(manifest))
    identity = PodIdentity(training_name="alr-grpo", namespace="ml", attempt=1, index=0, head_address="")
    (outcome,) = run_steps(plan_for(load_spec(config), identity, Options(), prepare=False), steps=[actor_and_reference])
    assert outcome.status == FAILED
    assert "ImportError" in outcome.detail and "FlashAttention2" in outcome.detail
