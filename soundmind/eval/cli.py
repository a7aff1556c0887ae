"""`soundmind eval --endpoint URL --model NAME --data OUT/test.parquet`: accuracy of a served model.

Exit status: 0 when every row was answered; 1 when some requests failed for good or the run
stopped early (the partial report is still written); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a served model on prepared ALR rows through an OpenAI-compatible endpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoint", required=True, help="server base URL, e.g. http://soundmind:8000")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--data", required=True, type=Path, help="prepared parquet (soundmind data prepare)")
    parser.add_argument("--concurrency", type=_positive_int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--report", type=Path, default=Path("eval-report.json"), help="JSON report path")
    parser.add_argument("--max-tokens", type=_positive_int, default=2048)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--retries", type=_non_negative_int, default=3, help="retries per request (default 3)")
    parser.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    parser.add_argument(
        "--max-consecutive-failures",
        type=_positive_int,
        default=32,
        help="stop sending after this many requests in a row fail for good (default 32)",
    )
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import pyarrow.parquet as pq

    from soundmind.eval.report import render_table, summarize, write_atomically
    from soundmind.eval.requests import read_items
    from soundmind.eval.runner import Settings, evaluate

    try:
        total_rows = pq.ParquetFile(args.data).metadata.num_rows
    except (OSError, ValueError) as exc:
        print(f"eval: cannot read --data {args.data}: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        endpoint=args.endpoint,
        model=args.model,
        concurrency=args.concurrency,
        retries=args.retries,
        backoff_s=args.backoff,
        timeout_s=args.timeout,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        max_consecutive_failures=args.max_consecutive_failures,
    )
    result = asyncio.run(evaluate(read_items(args.data), total_rows, settings))
    report = summarize(result, settings, args.data)
    write_atomically(report, args.report)
    print(render_table(report))
    print(f"report: {args.report}")
    if report["complete"]:
        return 0
    requests = report["requests"]
    errors = ", ".join(f"{reason}: {count}" for reason, count in requests["errors"].items())
    problems = []
    if requests["failed"]:
        problems.append(
            f"{requests['failed']} of {requests['rows']} requests failed after {settings.retries} retries ({errors})"
        )
    if requests["not_sent"]:
        problems.append(f"{requests['not_sent']} not sent")
    if report["stopped"]:
        problems.append(f"stopped: {report['stopped']}")
    print(f"eval: incomplete: {'; '.join(problems)}. Partial report written to {args.report}", file=sys.stderr)
    return 1
