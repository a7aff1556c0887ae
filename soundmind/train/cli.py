"""`soundmind train`: run one pod of a SoundMindTraining (the Ray head and verl driver on index 0,
a Ray worker elsewhere), or with --dry-run print the exact verl command and environment, or with
--rehearse build on CPU what that command builds before its first CUDA kernel (soundmind.train.rehearse).

A dry run works on a laptop too: without SOUNDMIND_TRAINING_NAME, or with a dataset.path that is
not on this machine, it renders and validates everything else and says which checks it skipped
(the pod always runs them). An invalid spec, data set or verl override exits 78."""

from __future__ import annotations

import argparse
import shlex
import sys

from soundmind.arguments import HelpFormatter, port, positive_float
from soundmind.train import contract

DRY_RUN_NAME = "dry-run"  # the training name a dry run uses when the environment gives none


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="run a training pod (verl GRPO)", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "--config",
        default=contract.CONFIG_PATH,
        help="TrainingSpec YAML: the spec section, or a whole SoundMindTraining manifest",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="validate, print the command and environment, exit")
    mode.add_argument(
        "--rehearse",
        action="store_true",
        help="build on CPU, through verl's and vLLM's code, what the rendered command builds before its first "
        "CUDA kernel; one line per step; exit 1 if a step failed (soundmind.train.rehearse)",
    )
    parser.add_argument("--checkpoints-root", default=contract.CHECKPOINTS_MOUNT, help="checkpoint volume mount")
    parser.add_argument(
        "--join-timeout",
        type=positive_float,
        default=900.0,
        help="seconds the head waits for every node, and a worker for the head",
    )
    parser.add_argument("--ray-port", type=port, default=contract.RAY_HEAD_PORT, help="Ray head port")
    parser.add_argument("--metrics-port", type=port, default=contract.METRICS_PORT, help="Prometheus port")
    parser.add_argument(
        "--progress-interval",
        type=positive_float,
        default=contract.PROGRESS_INTERVAL_SECONDS,
        help="least seconds between status patches",
    )
    parser.add_argument(
        "--cluster-view-command",
        type=shlex.split,
        default=None,
        help='command printing {"nodes": N, "gpus": G} for the Ray cluster (default: ask Ray)',
    )
    parser.add_argument(
        "--no-status", action="store_true", help="do not patch the SoundMindTraining status (metrics only)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from soundmind.train import cluster
    from soundmind.train.config import PodIdentity, load_spec
    from soundmind.train.launcher import Options, launch

    spec = load_spec(args.config)
    rendered_only = args.dry_run or args.rehearse
    identity = PodIdentity.from_env(default_name=DRY_RUN_NAME if rendered_only else None)
    if rendered_only and identity.training_name == DRY_RUN_NAME:
        print(f"# {contract.ENV_TRAINING_NAME} is not set: paths and names use {DRY_RUN_NAME!r} (the pod has it)")
    options = Options(
        checkpoints_root=args.checkpoints_root,
        ray_port=args.ray_port,
        join_timeout=args.join_timeout,
        view_command=args.cluster_view_command or cluster.VIEW_COMMAND,
        metrics_port=args.metrics_port,
        progress_interval=args.progress_interval,
    )
    if args.rehearse:
        return _rehearse(spec, identity, options)
    return launch(spec, identity, options, dry_run=args.dry_run, patch_status=_status_patch(args, identity))


def _rehearse(spec, identity, options) -> int:
    """The plan the dry run prints (the data set as it is: nothing is prepared), rehearsed."""
    from soundmind.train.launcher import plan_for
    from soundmind.train.rehearse import FAILED, rehearse

    outcomes = rehearse(plan_for(spec, identity, options, prepare=False))
    return 1 if any(outcome.status == FAILED for outcome in outcomes) else contract.EXIT_OK


def _status_patch(args: argparse.Namespace, identity):
    def connect():
        if args.no_status:
            return None
        from soundmind.train.progress import api_client_from_environment, status_patcher

        try:
            api_client = api_client_from_environment()
        except Exception as exc:  # noqa: BLE001 - no credentials must not stop the training
            print(f"soundmind: no Kubernetes credentials ({exc}); status is not reported", file=sys.stderr)
            return None
        return status_patcher(api_client, identity.namespace, identity.training_name)

    return connect
