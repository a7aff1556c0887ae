"""Where verl's driver runs. verl's Hydra entry (`verl.trainer.main_ppo`, `@hydra.main`) creates
`outputs/<date>/<time>/` under its working directory before the trainer starts. The trainer image's
working directory is root's, and the pod runs as the image's user, so the head runs the driver in the
attempt logs' directory on the checkpoint volume, and the dry run says so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from soundmind.train.launcher import describe, run_driver
from soundmind.train.render import LaunchPlan

HYDRA_LIKE = "import os, pathlib; pathlib.Path('outputs', 'day', 'time').mkdir(parents=True); print(os.getcwd())"


def plan(tmp_path: Path) -> LaunchPlan:
    log = tmp_path / "ckpt" / "alr" / "logs" / "attempt-1.jsonl"
    log.parent.mkdir(parents=True)
    return LaunchPlan(
        command=[sys.executable, "-c", HYDRA_LIKE],
        env={"VERL_FILE_LOGGER_PATH": str(log)},
        checkpoint_dir=str(tmp_path / "ckpt" / "alr"),
        log_path=str(log),
        total_steps=2,
        merger=[sys.executable, "-m", "verl.model_merger"],
    )


def test_the_driver_writes_hydras_outputs_beside_the_attempt_logs(tmp_path, capfd):
    launch = plan(tmp_path)
    here = os.getcwd()
    assert run_driver(launch) == 0
    assert capfd.readouterr().out.strip() == launch.working_dir == str(tmp_path / "ckpt" / "alr" / "logs")
    assert (Path(launch.working_dir) / "outputs" / "day" / "time").is_dir()
    assert os.getcwd() == here and not Path(here, "outputs", "day").exists()


def test_the_dry_run_shows_the_directory_first(tmp_path):
    launch = plan(tmp_path)
    assert describe(launch).splitlines()[0] == f"cd {launch.working_dir}"
