"""Export on success: verl 0.9.1's model merger turns the last checkpoint into a Hugging Face directory.

After verl's driver exits 0, the head (index 0) runs `python -m verl.model_merger merge --backend fsdp`
on `<checkpoint dir>/global_step_N/actor` into `<checkpoint dir>/export/global_step_N` and reports it as
`status.model {path, step}`. verl writes the last step's checkpoint at the end of every run, so N is
the final step. The merger resolves the model class through transformers' auto classes, so it runs with
SoundMind's Qwen2.5-Omni adapter imported (verl's `VERL_USE_EXTERNAL_MODULES`): the result is the full
Omni config with the thinker's weights under their `thinker.` names, the layout vLLM serves.

What the merger writes is then made complete for serving (`complete_for_serving`): the config keeps
only the thinker's output (`enable_audio_output: false`: the export has neither the talker's weights
nor its voices, `spk_dict.pt`), and the processor, tokenizer, chat template and generation files are
the source model's own, copied byte for byte over the merger's re-serialised ones, so vLLM and
transformers' `AutoProcessor` read the export exactly as they read the model training started from.

The merger's arguments are checked against verl's own argument parser (the `parse_args` function of
`verl/model_merger/base_model_merger.py`, run from the installed wheel's source without importing the
module, which would import torch), so a flag verl does not know fails at render time.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from soundmind.api.training import ModelStatus
from soundmind.errors import ConfigError
from soundmind.models import QWEN2_5_OMNI_ADAPTER
from soundmind.train.progress import read_checkpoint_step
from soundmind.train.verl_config import VERL_DISTRIBUTION, VERL_VERSION

MERGER_ENTRYPOINT = "verl.model_merger"
MERGER_SOURCE = "verl/model_merger/base_model_merger.py"
EXPORT_SUBDIR = "export"
MERGER_ENV = {"VERL_USE_EXTERNAL_MODULES": QWEN2_5_OMNI_ADAPTER}  # verl imports these modules on `import verl`
# What transformers' AutoProcessor and vLLM read besides config and weights, in the file names the hub
# and transformers use; the export carries the source model's own (those it has).
SERVING_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "generation_config.json",
)


def merger_program(python: str = sys.executable) -> list[str]:
    return [python, "-m", MERGER_ENTRYPOINT]


def export_dir(checkpoint_dir: str, step: int | str) -> str:
    return f"{checkpoint_dir}/{EXPORT_SUBDIR}/global_step_{step}"


def merge_arguments(checkpoint_dir: str, step: int | str) -> list[str]:
    return [
        "merge",
        "--backend",
        "fsdp",  # the engine verl's GRPO trainer runs with the rendered config
        "--local_dir",
        f"{checkpoint_dir}/global_step_{step}/actor",
        "--target_dir",
        export_dir(checkpoint_dir, step),
    ]


@functools.cache
def _verl_merger_parser() -> Callable[[], argparse.Namespace]:
    """verl's `parse_args()` (it builds its parser and parses sys.argv), taken from the wheel's source."""
    try:
        distribution = importlib.metadata.distribution(VERL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"verl is not installed; install verl=={VERL_VERSION}") from None
    path = Path(distribution.locate_file(MERGER_SOURCE))
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "parse_args"]
    if not functions:
        raise FileNotFoundError(f"{path} defines no parse_args(); verl {distribution.version} is not {VERL_VERSION}")
    namespace = {"argparse": argparse}
    exec(compile(ast.Module(body=functions, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace["parse_args"]


def check_merge_arguments(arguments: list[str]) -> argparse.Namespace:
    """Parse `arguments` with verl's model-merger parser; ConfigError with argparse's message if it refuses."""
    parse_args = _verl_merger_parser()
    message = io.StringIO()
    argv, sys.argv = sys.argv, [MERGER_ENTRYPOINT, *arguments]
    try:
        with contextlib.redirect_stderr(message):
            return parse_args()
    except SystemExit:
        error = message.getvalue().strip().splitlines()
        raise ConfigError(
            "storage.checkpoints",
            f"verl {VERL_VERSION}'s model merger refuses {arguments}: {error[-1] if error else ''}",
        ) from None
    finally:
        sys.argv = argv


class ExportError(RuntimeError):
    """The run trained, but its model could not be exported; the message says why."""


def export_last_checkpoint(
    checkpoint_dir: str, merger: list[str], source_model: str, say: Callable[[str], None]
) -> ModelStatus:
    """Merge the newest checkpoint into a Hugging Face directory, with verl's model merger, and make it
    complete for serving with the files of `source_model` (the spec's `model`)."""
    step = read_checkpoint_step(checkpoint_dir)
    if step is None:
        raise ExportError(f"no checkpoint to export in {checkpoint_dir} (no latest_checkpointed_iteration.txt)")
    arguments = merge_arguments(checkpoint_dir, step)
    check_merge_arguments(arguments)
    command = [*merger, *arguments]
    say(f"exporting global_step_{step}: {' '.join(f'{k}={v}' for k, v in MERGER_ENV.items())} {' '.join(command)}")
    done = subprocess.run(command, env={**os.environ, **MERGER_ENV})
    if done.returncode != 0:
        raise ExportError(f"verl's model merger exited {done.returncode} exporting global_step_{step}")
    target = export_dir(checkpoint_dir, step)
    try:
        complete_for_serving(Path(target), source_model, say)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot complete the export {target} for serving: {exc}") from None
    return ModelStatus(path=target, step=step)


def complete_for_serving(target: Path, source_model: str, say: Callable[[str], None]) -> None:
    """Turn off audio output in `target`'s config, and put the source model's processor, tokenizer,
    chat template and generation files in place of the merger's."""
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config["enable_audio_output"] = False  # the thinker only: no talker weights, no spk_dict.pt
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    source = model_files(source_model)
    if source is None:
        say(f"{source_model} is not on this machine: the export keeps the processor files verl's merger wrote")
        return
    for name in SERVING_FILES:
        (target / name).unlink(missing_ok=True)
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    copied = sorted(name for name in SERVING_FILES if (target / name).is_file())
    say(f"copied from {source}: {', '.join(copied)}")


def model_files(model: str) -> Path | None:
    """The directory holding `model`'s files: the model itself on the models volume, or the local hub
    cache's snapshot for a hub id verl downloaded (nothing is downloaded here); None if neither."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError):
        return None
