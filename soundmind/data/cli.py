"""`soundmind data synth` and `soundmind data prepare`. Bad input data exits with code 2 and a message
naming the split, line and sample id; an output that cannot be written exits 73 (`soundmind.errors`)."""

from __future__ import annotations

import argparse
import time

from soundmind.api.training import Modality
from soundmind.arguments import HelpFormatter, non_negative_int, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="make and prepare ALR data sets", formatter_class=HelpFormatter)
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth",
        help="a small ALR data set (published layout) spoken by espeak-ng",
        description="Write OUT/<split>.jsonl and OUT/<split>/<id>/{question,answer_<label>}.wav (16 kHz "
        "mono), spoken from an annotation file or from logic problems generated here.",
        formatter_class=HelpFormatter,
    )
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument(
        "--from",
        dest="source",
        metavar="ANNOTATIONS.jsonl",
        help="speak these rows (id, user_content, answer, label) instead of generated problems",
    )
    synth.add_argument("--split", default="dev", help="split name to write (letters, digits, '.', '_', '-')")
    synth.add_argument(
        "--limit", type=positive_int, help="at most N samples (default: 16 generated, or all rows of --from)"
    )
    synth.add_argument("--seed", type=non_negative_int, default=0, help="seed of the generated problems")
    synth.add_argument("--workers", type=positive_int, help="parallel espeak-ng processes (default: CPU count)")
    synth.set_defaults(func=_synth)

    prepare = commands.add_parser(
        "prepare",
        help="ALR data set -> verl parquet (OUT/<split>.parquet)",
        description="Convert an ALR data set (published or Hugging Face layout, detected) into the parquet "
        "rows verl's RLHFDataset reads. See soundmind/data/prepare.py for the row format. OUT is replaced "
        "as a whole once every split is complete.",
        formatter_class=HelpFormatter,
    )
    prepare.add_argument("--data-dir", required=True, help="ALR data set root")
    prepare.add_argument("--out", required=True, help="output directory for <split>.parquet")
    prepare.add_argument(
        "--modality", required=True, choices=[m.value for m in Modality], help="what the model is given"
    )
    prepare.add_argument(
        "--splits", nargs="+", metavar="SPLIT", help="splits to prepare (default: every split present)"
    )
    prepare.add_argument(
        "--audio-ref",
        choices=["bytes", "path"],
        default="bytes",
        help="embed 16 kHz WAV bytes (self-contained) or store source file paths",
    )
    prepare.add_argument(
        "--row-group-rows", type=positive_int, default=None, help="rows per parquet row group (default: 32)"
    )
    prepare.add_argument("--workers", type=positive_int, help="audio decoding threads (default: CPU count)")
    prepare.set_defaults(func=_prepare)


def _synth(args: argparse.Namespace) -> int:
    from soundmind.data import synth

    started = time.monotonic()
    if args.source:
        annotations = synth.read_annotations(args.source, args.split, args.limit)
    else:
        annotations = synth.generated_annotations(args.limit or 16, args.seed)
    count = synth.synthesize(args.out, annotations, args.split, args.workers)
    print(f"{args.out}: {count} {args.split} samples spoken in {time.monotonic() - started:.1f}s")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from soundmind.data.prepare import DEFAULT_ROW_GROUP_ROWS, prepare

    started = time.monotonic()
    summaries = prepare(
        args.data_dir,
        args.out,
        args.modality,
        splits=args.splits,
        audio_ref=args.audio_ref,
        row_group_rows=args.row_group_rows or DEFAULT_ROW_GROUP_ROWS,
        workers=args.workers,
    )
    for summary in summaries:
        note = ""
        if summary.cot_inconsistent:
            shown = ", ".join(summary.cot_inconsistent[:10]) + (" ..." if len(summary.cot_inconsistent) > 10 else "")
            note = f"; {len(summary.cot_inconsistent)} reference chains end with the other answer (ids {shown})"
        print(f"{summary.path}: {summary.rows} rows{note}")
    print(f"prepared {args.modality} in {time.monotonic() - started:.1f}s")
    return 0
