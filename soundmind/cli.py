"""`soundmind` command line. Each area registers its own sub-commands; heavy imports stay inside
the command functions so `soundmind --help` works in the small operator image too.

A problem the user can act on ends with a one-line message and the exit code documented in
`soundmind.errors` (2 bad input, 73 cannot write, 78 bad training config, 130/143 interrupted),
never a traceback."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from soundmind.arguments import HelpFormatter
from soundmind.errors import EXIT_SIGINT, EXIT_SIGTERM, SoundMindError
from soundmind.version import VERSION

# area -> module exposing `register(subparsers)`; each registered parser sets `func`.
_AREAS = {
    "data": "soundmind.data.cli",
    "eval": "soundmind.eval.cli",
    "model": "soundmind.models.cli",
    "reward": "soundmind.reward.cli",
    "train": "soundmind.train.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soundmind", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _AREAS.values():
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:  # an area not built yet, or its extra not installed
            if exc.name != module:
                raise
    return parser


def _command_name(args: argparse.Namespace) -> str:
    """`soundmind data prepare`: the area and its sub-command, if it has one."""
    return " ".join(filter(None, ["soundmind", args.command, getattr(args, f"{args.command}_command", None)]))


def _terminated(signum: int, frame) -> None:
    raise SystemExit(EXIT_SIGTERM)  # unwinds like Ctrl-C, so every `finally` and cleanup runs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return int(args.func(args) or 0)
    except SoundMindError as exc:
        kind = f"{exc.kind}: " if exc.kind else ""
        print(f"{_command_name(args)}: {kind}{exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{_command_name(args)}: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
