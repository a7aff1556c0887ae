"""The evaluation report: what `soundmind eval` prints and writes as JSON."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from soundmind.eval.runner import RunResult, Settings
from soundmind.prompt import LABELS

UNPARSEABLE = "unparseable"


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def summarize(result: RunResult, settings: Settings, data: Path) -> dict[str, Any]:
    """Accuracy, confusion and unparseable rate are over the answered rows (failed requests have no
    answer to score); `requests` says how many rows that is."""
    answered = [o for o in result.outcomes if o.error is None]
    failed = [o for o in result.outcomes if o.error is not None]
    confusion = {gold: {pred: 0 for pred in (*LABELS, UNPARSEABLE)} for gold in LABELS}
    for outcome in answered:
        confusion[outcome.gold][outcome.pred or UNPARSEABLE] += 1
    per_class = {}
    for label in LABELS:
        predicted = sum(confusion[gold][label] for gold in LABELS)
        support = sum(confusion[label].values())
        per_class[label] = {
            "support": support,
            "precision": _ratio(confusion[label][label], predicted),
            "recall": _ratio(confusion[label][label], support),
        }
    latencies = [o.latency_s for o in answered if o.latency_s is not None]
    return {
        "endpoint": settings.url,
        "model": settings.model,
        "data": str(data),
        "complete": not failed and len(result.outcomes) == result.total_rows,
        "stopped": result.stopped,
        "requests": {
            "rows": result.total_rows,
            "answered": len(answered),
            "failed": len(failed),
            "not_sent": result.total_rows - len(result.outcomes),
            "retries": sum(o.attempts - 1 for o in result.outcomes),
            "errors": dict(Counter(o.error for o in failed).most_common()),
        },
        "accuracy": _ratio(sum(o.correct for o in answered), len(answered)),
        "unparseable_rate": _ratio(sum(o.pred is None for o in answered), len(answered)),
        "format_rate": _ratio(sum(o.format_ok for o in answered), len(answered)),
        "mean_reward": _ratio(sum(o.score for o in answered), len(answered)),  # type: ignore[arg-type]
        "confusion": confusion,
        "per_class": per_class,
        "latency_s": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "requests_per_second": _ratio(len(answered), result.wall_s),  # type: ignore[arg-type]
        "wall_s": result.wall_s,
        "settings": {
            "concurrency": settings.concurrency,
            "retries": settings.retries,
            "max_tokens": settings.max_tokens,
        },
        "rows": [
            {
                "id": o.id,
                "gold": o.gold,
                "pred": o.pred,
                "correct": o.correct,
                "format_ok": o.format_ok,
                "latency_s": o.latency_s,
                "attempts": o.attempts,
                "error": o.error,
            }
            for o in result.outcomes
        ],
    }


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def render_table(report: dict[str, Any]) -> str:
    requests = report["requests"]
    latency = report["latency_s"]
    lines = [
        f"{report['data']} -> {report['endpoint']} ({report['model']})",
        f"rows {requests['rows']}   answered {requests['answered']}   failed {requests['failed']}   "
        f"not sent {requests['not_sent']}   retries {requests['retries']}",
        f"accuracy {_number(report['accuracy'], '.3f')}   unparseable {_number(report['unparseable_rate'], '.3f')}   "
        f"format ok {_number(report['format_rate'], '.3f')}   mean reward {_number(report['mean_reward'], '.3f')}",
        f"latency p50 {_number(latency['p50'], '.3f')} s   p95 {_number(latency['p95'], '.3f')} s   "
        f"throughput {_number(report['requests_per_second'], '.2f')} req/s",
        "",
        f"{'gold / predicted':<18}" + "".join(f"{c:>14}" for c in (*LABELS, UNPARSEABLE)) + f"{'recall':>10}",
    ]
    for gold, row in report["confusion"].items():
        recall = report["per_class"][gold]["recall"]
        lines.append(f"{gold:<18}" + "".join(f"{n:>14}" for n in row.values()) + f"{_number(recall, '.3f'):>10}")
    return "\n".join(lines)


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"
