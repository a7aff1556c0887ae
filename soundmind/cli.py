"""`soundmind` command line. Each area registers its own sub-commands; heavy imports stay inside
the command functions so `soundmind --help` works in the small operator image too."""

from __future__ import annotations

import argparse
import importlib
import sys

# area -> module exposing `register(subparsers)`; each registered parser sets `func`.
_AREAS = {
    "data": "soundmind.data.cli",
    "eval": "soundmind.eval.cli",
    "reward": "soundmind.reward.cli",
    "train": "soundmind.train.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soundmind", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _AREAS.values():
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:  # an area not built yet, or its extra not installed
            if exc.name != module:
                raise
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
