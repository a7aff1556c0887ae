"""`soundmind model tiny-omni --out DIR`: a tiny random Qwen2.5-Omni in the hub's layout, made on the
spot with no download, for a smoke run of the whole stack (examples/smoke, hack/gpu-smoke.sh). An
output that cannot be written exits 73 (`soundmind.errors`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from soundmind.arguments import HelpFormatter, non_negative_int


def register(subparsers: argparse._SubParsersAction) -> None:
    model = subparsers.add_parser("model", help="make model checkpoints", formatter_class=HelpFormatter)
    commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    tiny = commands.add_parser(
        "tiny-omni",
        help="a tiny random Qwen2.5-Omni in the hub's layout (no download)",
        description="Write a Qwen2.5-Omni checkpoint with hidden size 32 and random (seeded) weights into OUT: "
        "the hub's config layout, weights of the thinker, talker and token2wav, and a processor. verl trains it "
        "and vLLM serves it like Qwen/Qwen2.5-Omni-7B, in seconds. OUT is replaced as a whole once the "
        "checkpoint is complete.",
        formatter_class=HelpFormatter,
    )
    tiny.add_argument("--out", required=True, type=Path, help="output directory")
    tiny.add_argument("--seed", type=non_negative_int, default=0, help="seed of the random weights")
    tiny.set_defaults(func=_tiny_omni)


def _tiny_omni(args: argparse.Namespace) -> int:
    from soundmind.errors import UsageError
    from soundmind.models import tiny

    started = time.monotonic()
    try:
        tiny.write(args.out, seed=args.seed)
    except ModuleNotFoundError as exc:  # the operator image has the CLI but no torch
        raise UsageError(f"needs {exc.name}, which this environment lacks: run it in the trainer image") from None
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    elapsed = time.monotonic() - started
    print(f"{args.out}: tiny random Qwen2.5-Omni (seed {args.seed}, {size / 1e6:.1f} MB) in {elapsed:.1f}s")
    return 0
