"""The verl config of the real run: what `soundmind train --dry-run` renders for examples/training.yaml,
composed against verl's schema as `verl.trainer.main_ppo` composes it.

Tests that build verl objects read their settings (FSDP strategy and precision, checkpoint contents,
reward function) from here, so a change in rendering changes what they build. Only the model may be
replaced (a tiny Omni instead of the hub's 7B), and the data set is absent, as in a dry run away from
the data volume.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "training.yaml"


def rendered_command(model: str | None = None, checkpoints_root: str | None = None) -> list[str]:
    """The verl overrides of the dry run (`python -m verl.trainer.main_ppo` left off)."""
    from soundmind.train.config import PodIdentity, load_spec
    from soundmind.train.launcher import Options, plan_for

    spec = load_spec(EXAMPLE)
    if model is not None:
        spec = spec.model_copy(update={"model": model})
    identity = PodIdentity.from_env({}, default_name="dry-run")
    options = Options() if checkpoints_root is None else Options(checkpoints_root=checkpoints_root)
    plan = plan_for(spec, identity, options, prepare=False)
    assert plan.command[1:3] == ["-m", "verl.trainer.main_ppo"]
    return plan.command[3:]


def rendered_config(model: str | None = None) -> DictConfig:
    from soundmind.train.verl_config import compose

    return compose(rendered_command(model))
