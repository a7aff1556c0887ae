"""Scored responses per second of the SoundMind-RL reward, on one core, against a naive baseline.

Responses are built from the ALR dev references (their reasoning in <think>...</think>, then the
gold answer line), so they have the reference length (~840 words, ~5 kB). The baseline, in this
file, scores the same responses the obvious way: a regex over the whole text for the format,
lower-casing the text and searching it for the answer, and splitting it into words for the
length; it is there to show what the single reading from the end buys, on the same machine in the
same run. Both are checked to agree on acc and format before timing.

    $(hack/venv.sh)/bin/python benchmarks/reward_bench.py [--annotations PATH] [--seconds 3]

Target (issue 3): at least 50,000 responses per second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from soundmind.prompt import LABELS
from soundmind.reward import compute_score

DEFAULT_ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alr" / "dev.jsonl"
TARGET_PER_SECOND = 50_000


# --- baseline: naive multi-pass scoring (for comparison only) ---------------------------------------
_NAIVE_FORMAT = re.compile(r"^\s*<think>(.+?)</think>\s*Answer: (entailed|not-entailed)\s*$", re.DOTALL)
_NAIVE_ANSWER = re.compile(r"answer:\s*(not[\s-]*entailed|non-entailed|notentailed|entailed)")


def naive_score(solution_str: str, ground_truth: str, ref_words: int) -> dict:
    match = _NAIVE_FORMAT.match(solution_str)  # pass 1: the whole text
    answers = _NAIVE_ANSWER.findall(solution_str.lower())  # passes 2 and 3: lower-case copy, search it
    pred = None
    if answers:
        pred = "entailed" if answers[-1] == "entailed" else "not-entailed"
    words = len(match.group(1).split()) if match else 0  # pass 4: split into words
    length = 1.0 if match and 0.5 * ref_words <= words <= 1.5 * ref_words else 0.0
    acc = float(pred == ground_truth)
    return {"score": float(bool(match)) + 2.0 * acc + length, "acc": acc, "format_ok": bool(match)}


# ------------------------------------------------------------------------------------------------------


def build_responses(annotations: Path) -> list[tuple[str, str, dict]]:
    cases = []
    with annotations.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            reasoning = row["answer"].rstrip()
            reasoning = reasoning[: reasoning.rfind("\n")]
            gold = LABELS[row["label"]]
            info = {"ref_answer_words": len(row["answer"].split())}
            cases.append((f"<think>\n{reasoning}\n</think>\nAnswer: {gold}", gold, info))
    return cases


def rate(score, cases: list[tuple[str, str, dict]], seconds: float) -> float:
    """Responses per second, best of repeated passes over all cases (best: least disturbed by others)."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for text, gold, info in cases:
            score(text, gold, info)
        best = max(best, len(cases) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget for each implementation")
    args = parser.parse_args()

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    cases = build_responses(args.annotations)
    words = sum(len(text.split()) for text, _, _ in cases) / len(cases)

    def ours(text, gold, info):
        return compute_score("soundmind/alr", text, gold, info)

    def baseline(text, gold, info):
        return naive_score(text, gold, info["ref_answer_words"])

    for text, gold, info in cases:
        mine, theirs = ours(text, gold, info), baseline(text, gold, info)
        assert (mine["acc"], mine["format_ok"]) == (theirs["acc"], theirs["format_ok"]) == (1.0, True)

    ours_rate = rate(ours, cases, args.seconds)
    baseline_rate = rate(baseline, cases, args.seconds)
    print(f"{len(cases)} responses from {args.annotations}, mean {words:.0f} words, one core")
    print(f"{'implementation':<32}{'responses/s':>14}{'us/response':>14}")
    for name, value in (("soundmind.reward.compute_score", ours_rate), ("baseline (naive, multi-pass)", baseline_rate)):
        print(f"{name:<32}{value:>14,.0f}{1e6 / value:>14.2f}")
    verdict = "meets" if ours_rate >= TARGET_PER_SECOND else "MISSES"
    print(f"speed-up {ours_rate / baseline_rate:.1f}x; {verdict} the target of {TARGET_PER_SECOND:,}/s")


if __name__ == "__main__":
    main()
