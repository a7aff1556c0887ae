"""`soundmind train`: run one pod of a SoundMindTraining (the Ray head and verl driver on index 0,
a Ray worker elsewhere), or with --dry-run print the exact verl command and environment."""

from __future__ import annotations

import argparse
import shlex
import sys

from soundmind.train import contract


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="run a training pod (verl GRPO)", description=__doc__)
    parser.add_argument(
        "--config", default=contract.CONFIG_PATH, help=f"TrainingSpec YAML (default {contract.CONFIG_PATH})"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate, print the command and environment, exit")
    parser.add_argument(
        "--checkpoints-root", default=contract.CHECKPOINTS_MOUNT, help="checkpoint volume mount (default %(default)s)"
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=900.0,
        help="seconds the head waits for every node, and a worker for the head (default %(default)s)",
    )
    parser.add_argument(
        "--ray-port", type=int, default=contract.RAY_HEAD_PORT, help="Ray head port (default %(default)s)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=contract.METRICS_PORT, help="Prometheus port (default %(default)s)"
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=contract.PROGRESS_INTERVAL_SECONDS,
        help="least seconds between status patches (default %(default)s)",
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
    from soundmind.train.errors import ConfigError
    from soundmind.train.launcher import Options, launch

    try:
        spec = load_spec(args.config)
        identity = PodIdentity.from_env()
        options = Options(
            checkpoints_root=args.checkpoints_root,
            ray_port=args.ray_port,
            join_timeout=args.join_timeout,
            view_command=args.cluster_view_command or cluster.VIEW_COMMAND,
            metrics_port=args.metrics_port,
            progress_interval=args.progress_interval,
        )
        return launch(spec, identity, options, dry_run=args.dry_run, patch_status=_status_patch(args, identity))
    except ConfigError as exc:
        print(f"soundmind train: invalid configuration: {exc}", file=sys.stderr)
        return contract.EXIT_CONFIG_ERROR


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
