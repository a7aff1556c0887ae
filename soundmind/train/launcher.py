"""What a training pod does, by role: the head (index 0) and the workers, each after checking that its
node can run the image (`soundmind.train.preflight`). `soundmind.train.cli` is the thin argument
layer over `launch`."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from soundmind.api.training import TrainingSpec
from soundmind.errors import ConfigError
from soundmind.train import cluster, contract, export, preflight
from soundmind.train.config import PodIdentity
from soundmind.train.dataset import DatasetFiles, ensure_prepared, locate
from soundmind.train.metrics import TrainMetrics
from soundmind.train.progress import ProgressReporter, StatusPatch
from soundmind.train.render import LaunchPlan, render


@dataclass(frozen=True)
class Options:
    checkpoints_root: str = contract.CHECKPOINTS_MOUNT
    ray_port: int = contract.RAY_HEAD_PORT
    join_timeout: float = 900.0  # head: all nodes joined; worker: head reachable
    view_command: Sequence[str] = cluster.VIEW_COMMAND
    metrics_port: int = contract.METRICS_PORT
    progress_interval: float = contract.PROGRESS_INTERVAL_SECONDS


def say(message: str) -> None:
    print(f"soundmind: {message}", flush=True)


def describe(plan: LaunchPlan) -> str:
    """The plan as a shell script: the exact environment and command, then the export on success."""
    lines = [f"cd {shlex.quote(plan.working_dir)}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in plan.env.items()]
    program, arguments = plan.command[:3], plan.command[3:]  # python -m verl.trainer.main_ppo
    lines.append(" \\\n    ".join([shlex.join(program), *(shlex.quote(part) for part in arguments)]))
    lines.append(
        "# when verl succeeds, the head exports its last checkpoint into status.model"
        " (audio output off, the model's processor files copied in):"
    )
    exporting = [f"{name}={shlex.quote(value)}" for name, value in export.MERGER_ENV.items()]
    lines.append(" ".join([*exporting, shlex.join(plan.export_command())]))
    return "\n".join(lines)


def plan_for(spec: TrainingSpec, identity: PodIdentity, options: Options, prepare: bool) -> LaunchPlan:
    dataset = locate(spec.dataset.path, spec.dataset.modality, absent_ok=not prepare)
    if prepare and not dataset.ready:
        _prepare(dataset, spec.dataset.modality)
    return render(spec, identity, dataset, checkpoints_root=options.checkpoints_root, ray_port=options.ray_port)


def _prepare(dataset: DatasetFiles, modality: str) -> None:
    from soundmind.errors import DataError

    say(f"preparing {dataset.raw_root} into {dataset.directory} ({modality})")
    try:
        prepared = ensure_prepared(dataset, modality)
    except DataError as exc:
        raise ConfigError("dataset.path", f"cannot prepare {dataset.raw_root}: {exc}") from None
    say("prepared" if prepared else f"{dataset.directory} was prepared by another pod")


def launch(
    spec: TrainingSpec,
    identity: PodIdentity,
    options: Options,
    dry_run: bool = False,
    patch_status: Callable[[], StatusPatch | None] = lambda: None,
) -> int:
    if not dry_run:  # every pod, before Ray and before the data set is prepared
        say("preflight: " + preflight.check(spec).describe())
    object_store = cluster.object_store_bytes(spec.resources.shm_size)  # a dry run checks it too
    if not identity.is_head and not dry_run:
        checkpoint_dir = contract.checkpoint_dir(identity.training_name, options.checkpoints_root)
        return cluster.run_worker(
            identity.head_address,
            spec.resources.gpus_per_node,
            object_store,
            contract.attempt_log_path(checkpoint_dir, identity.attempt),
            options.join_timeout,
            options.ray_port,
        )
    plan = plan_for(spec, identity, options, prepare=not dry_run)
    if dry_run:
        for note in plan.notes:
            print(f"# {note}")
        print(describe(plan))
        return contract.EXIT_OK
    say("verl driver:\n" + describe(plan))
    return run_head(spec, plan, options, patch_status())


def run_head(spec: TrainingSpec, plan: LaunchPlan, options: Options, patch_status: StatusPatch | None) -> int:
    Path(plan.working_dir).mkdir(parents=True, exist_ok=True)  # the attempt's log and the driver's directory
    metrics = TrainMetrics()
    server = metrics.serve(options.metrics_port)
    say(f"metrics on :{server.server_port}/metrics")
    reporter = ProgressReporter(
        plan.log_path,
        plan.checkpoint_dir,
        metrics,
        patch_status,
        total_steps=plan.total_steps,
        interval=options.progress_interval,
    )
    stop = threading.Event()
    reporting = threading.Thread(target=reporter.run, args=(stop,), name="progress-reporter", daemon=True)
    reporting.start()
    try:
        code = train(spec, plan, options)
        if code == contract.EXIT_OK:
            code = export_model(spec, plan, reporter)
        return code
    finally:
        stop.set()
        reporting.join(timeout=30)  # its last poll publishes the final progress and the exported model
        server.shutdown()


def train(spec: TrainingSpec, plan: LaunchPlan, options: Options) -> int:
    """Ray head, all nodes joined, verl's driver; Ray is stopped before returning, so the workers'
    GPUs are released while the head exports."""
    code = 1
    try:
        object_store = cluster.object_store_bytes(spec.resources.shm_size)
        cluster.start_head(spec.resources.gpus_per_node, object_store, options.ray_port)
        state = cluster.wait_for_nodes(
            cluster.command_view(options.view_command),
            spec.resources.nodes,
            spec.resources.gpus_per_node,
            options.join_timeout,
        )
        say(f"Ray cluster ready: {state.nodes} node(s), {state.gpus:g} GPU(s)")
        code = run_driver(plan)
        say(f"verl driver exited {code}")
        return code
    except cluster.ClusterError as exc:
        print(f"soundmind: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
        return code
    finally:
        cluster.mark_finished(plan.log_path, code)  # before Ray stops: the workers then end as finished
        cluster.stop_ray()


def export_model(spec: TrainingSpec, plan: LaunchPlan, reporter: ProgressReporter) -> int:
    try:
        reporter.model = export.export_last_checkpoint(plan.checkpoint_dir, plan.merger, spec.model, say)
    except export.ExportError as exc:
        print(f"soundmind: training succeeded but the export failed: {exc}", file=sys.stderr, flush=True)
        return contract.EXIT_EXPORT_FAILED
    say(f"exported global_step_{reporter.model.step} to {reporter.model.path}")
    return contract.EXIT_OK


def run_driver(plan: LaunchPlan) -> int:
    """Run verl's driver; a SIGTERM to this process (pod deletion) is passed on to it."""
    driver = subprocess.Popen(plan.command, env={**os.environ, **plan.env}, cwd=plan.working_dir)
    previous = signal.signal(signal.SIGTERM, lambda *_: driver.terminate())
    try:
        return driver.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
