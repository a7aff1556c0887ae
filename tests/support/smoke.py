"""The smoke run's manifests (examples/smoke) as the tests read them: the setup Job's steps in the
order its pod runs them, and the smoke training. The unit tier runs those very commands on this
machine, the real-node test in the trainer image, so neither can drift from what a user applies."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "smoke"


def manifest(name: str) -> dict:
    (document,) = yaml.safe_load_all((SMOKE / name).read_text())
    return document


def containers(job: dict) -> list[dict]:
    """A Job's containers in the order its pod runs them: init containers, then the main one."""
    pod = job["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def setup_steps() -> list[list[str]]:
    """The setup Job's commands (each a `soundmind` command line)."""
    return [container["command"] for container in containers(manifest("setup.yaml"))]


def relocated(argv: list[str], mounts: dict[str, Path]) -> list[str]:
    """`argv` with each volume mount point (e.g. /data) replaced by a local directory."""

    def move(argument: str) -> str:
        for mount, directory in mounts.items():
            if argument == mount or argument.startswith(f"{mount}/"):
                return str(directory) + argument[len(mount) :]
        return argument

    return [move(argument) for argument in argv]
