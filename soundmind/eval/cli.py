"""`soundmind eval --endpoint URL --model NAME --data OUT/test.parquet`: accuracy of a served model.

Exit status: 0 when every row was answered; 1 when some requests failed for good or the run
stopped early (the partial report is still written); 2 for bad arguments or unreadable data;
73 when the report cannot be written (checked before the first request); 130/143 after SIGINT/
SIGTERM (requests in flight are cancelled, the partial report is written).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from soundmind.arguments import HelpFormatter, non_negative_float, non_negative_int, positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a served model on prepared ALR rows through an OpenAI-compatible endpoint",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--endpoint", required=True, help="server base URL, e.g. http://soundmind:8000")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--data", required=True, type=Path, help="prepared parquet (soundmind data prepare)")
    parser.add_argument("--concurrency", type=positive_int, default=16, help="requests in flight")
    parser.add_argument("--report", type=Path, default=Path("eval-report.json"), help="JSON report path")
    parser.add_argument("--max-tokens", type=positive_int, default=2048, help="completion token limit per request")
    parser.add_argument("--temperature", type=non_negative_float, default=0.0, help="sampling temperature")
    parser.add_argument("--retries", type=non_negative_int, default=3, help="retries per request")
    parser.add_argument(
        "--backoff", type=non_negative_float, default=1.0, help="first retry delay in seconds, doubling each retry"
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=600.0, help="seconds each request may take in all (a deadline)"
    )
    parser.add_argument(
        "--max-consecutive-failures",
        type=positive_int,
        default=32,
        help="stop sending after this many requests in a row fail for good",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    import pyarrow.parquet as pq

    from soundmind import atomic
    from soundmind.errors import EXIT_INCOMPLETE, UsageError, exit_code_for_signal
    from soundmind.eval.report import render_table, summarize, to_json
    from soundmind.eval.requests import read_items
    from soundmind.eval.runner import Settings, check_endpoint, evaluate

    check_endpoint(args.endpoint)
    try:
        total_rows = pq.ParquetFile(args.data).metadata.num_rows
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --data {args.data}: {exc}") from None
    atomic.check_writable(args.report)  # before the first request: results must have somewhere to go
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
    atomic.write_text(args.report, to_json(report))
    print(render_table(report))
    print(f"report: {args.report}")
    if report["complete"]:
        return 0
    requests = report["requests"]
    problems = []
    if requests["failed"]:
        errors = ", ".join(
            f"{reason}: {count}, {_tries(report, reason)}" for reason, count in requests["errors"].items()
        )
        problems.append(f"{requests['failed']} of {requests['rows']} requests failed for good ({errors})")
    if requests["not_sent"]:
        problems.append(f"{requests['not_sent']} not sent or not answered")
    if report["stopped"]:
        problems.append(f"stopped: {report['stopped']}")
    print(
        f"soundmind eval: incomplete: {'; '.join(problems)}. Partial report written to {args.report}", file=sys.stderr
    )
    return exit_code_for_signal(result.signal) if result.signal else EXIT_INCOMPLETE


def _tries(report: dict, reason: str) -> str:
    """What was done about the requests that failed with `reason`: said, never assumed."""
    attempts = sorted({row["attempts"] for row in report["rows"] if row["error"] == reason})
    if attempts == [1]:
        return "not retried"
    counts = "-".join(str(n) for n in dict.fromkeys([attempts[0], attempts[-1]]))
    return f"after {counts} attempts each"
