"""`soundmind reward check ANNOTATIONS.jsonl`: which reference chains contradict their labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from soundmind.arguments import HelpFormatter


def register(subparsers: argparse._SubParsersAction) -> None:
    reward = subparsers.add_parser("reward", help="the SoundMind-RL reward", formatter_class=HelpFormatter)
    sub = reward.add_subparsers(dest="reward_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        help="list the rows whose reference reasoning ends with an answer that contradicts the label",
        formatter_class=HelpFormatter,
    )
    check.add_argument(
        "annotations",
        type=Path,
        help="ALR annotations: JSON lines with id, answer (or annotation_answer, Hugging Face layout), label",
    )
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    from soundmind.reward.references import check_references

    result = check_references(args.annotations)
    print(
        f"{args.annotations}: {len(result.contradicting)} of {result.total} reference chains end with an "
        f"answer that contradicts the label; {len(result.unparseable)} end with no single answer"
    )
    for kind, ids in (("contradicting", result.contradicting), ("unparseable", result.unparseable)):
        if ids:
            print(f"{kind}: {' '.join(ids)}")
    return 0
