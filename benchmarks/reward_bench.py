"""Scored responses per second of the SoundMind-RL reward, on one core, for the response shapes a
policy really emits, against a naive baseline.

Shapes, each built from every ALR dev reference chain (~840 words, ~5 kB):

- reference:   <think>REASONING</think> then the gold answer line (well formed, reference length)
- one-line:    the reasoning with its newlines removed, cut to 5 kB: one long line, no answer
- cut-off:     <think> and the reasoning cut at maxResponseLength tokens (max length reached)
- max-length:  rambling (the reasoning repeated) up to maxResponseLength tokens, then an answer
- 100 kB:      rambling far past any response limit (measured, not held to the target)

The baseline, in this file, scores the same responses the obvious way: a regex over the whole text
for the format, lower-casing the text and searching it for the answer, and splitting it into words
for the length. Each figure is the median of several passes over all the shape's responses (the
median, not the best: a loaded machine should not flatter us).

    $(hack/venv.sh)/bin/python benchmarks/reward_bench.py [--annotations PATH] [--passes 7]

Target (issues 3 and 10): at least 50,000 responses per second for every shape up to
maxResponseLength tokens. Exits 1 if a shape misses it, 2 when the annotations are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from soundmind.prompt import LABELS
from soundmind.reward import compute_score

DEFAULT_ANNOTATIONS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "alr" / "dev.jsonl"
TARGET_PER_SECOND = 50_000
MAX_RESPONSE_TOKENS = 2048  # the spec's default algorithm.maxResponseLength
CHARS_PER_TOKEN = 4  # English text in Qwen's tokenizer, about
MAX_RESPONSE_CHARS = MAX_RESPONSE_TOKENS * CHARS_PER_TOKEN


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

Case = tuple[str, str, dict]


def build_shapes(annotations: Path) -> dict[str, tuple[list[Case], bool]]:
    """shape -> (cases, held to the target)."""
    shapes: dict[str, list[Case]] = {name: [] for name in ("reference", "one-line", "cut-off", "max-length", "100 kB")}
    with annotations.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            reasoning = row["answer"].rstrip()
            reasoning = reasoning[: reasoning.rfind("\n")]
            gold = LABELS[row["label"]]
            info = {"ref_answer_words": len(row["answer"].split())}
            answer = f"\n</think>\nAnswer: {gold}"

            def rambling(chars: int, reasoning: str = reasoning, answer: str = answer) -> str:
                repeated = "<think>\n" + (reasoning + "\n") * (chars // max(1, len(reasoning)) + 1)
                return repeated[: chars - len(answer)] + answer

            shapes["reference"].append((f"<think>\n{reasoning}{answer}", gold, info))
            shapes["one-line"].append((("<think> " + reasoning.replace("\n", " "))[:5000], gold, info))
            shapes["cut-off"].append((f"<think>\n{reasoning}\n{reasoning}"[:MAX_RESPONSE_CHARS], gold, info))
            shapes["max-length"].append((rambling(MAX_RESPONSE_CHARS), gold, info))
            shapes["100 kB"].append((rambling(100_000), gold, info))
    return {name: (cases, name != "100 kB") for name, cases in shapes.items()}


def rate(score, cases: list[Case], passes: int) -> float:
    """Responses per second: the median of `passes` passes over all cases."""
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for text, gold, info in cases:
            score(text, gold, info)
        rates.append(len(cases) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--annotations", type=Path, default=DEFAULT_ANNOTATIONS, help="ALR annotations (default: %(default)s)"
    )
    parser.add_argument("--passes", type=int, default=7, help="passes per measurement; the median is reported")
    args = parser.parse_args()
    if not args.annotations.is_file():
        print(
            f"reward_bench: ALR annotations not found at {args.annotations}; pass --annotations PATH "
            "(any ALR annotation file: id, answer, label per JSON line)",
            file=sys.stderr,
        )
        return 2

    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    shapes = build_shapes(args.annotations)

    def ours(text, gold, info):
        return compute_score("soundmind/alr", text, gold, info)

    def baseline(text, gold, info):
        return naive_score(text, gold, info["ref_answer_words"])

    for text, gold, info in shapes["reference"][0]:
        mine, theirs = ours(text, gold, info), baseline(text, gold, info)
        assert (mine["acc"], mine["format_ok"]) == (theirs["acc"], theirs["format_ok"]) == (1.0, True)

    count = len(shapes["reference"][0])
    print(f"{count} responses per shape from {args.annotations}; one core; median of {args.passes} passes")
    print(f"{'shape':<12}{'mean chars':>12}{'ours/s':>12}{'us each':>10}{'baseline/s':>13}{'speed-up':>10}")
    missed = []
    for name, (cases, held) in shapes.items():
        chars = sum(len(text) for text, _, _ in cases) / len(cases)
        ours_rate, baseline_rate = rate(ours, cases, args.passes), rate(baseline, cases, args.passes)
        note = "" if held else "  (past maxResponseLength: not held to the target)"
        print(
            f"{name:<12}{chars:>12,.0f}{ours_rate:>12,.0f}{1e6 / ours_rate:>10.2f}{baseline_rate:>13,.0f}"
            f"{ours_rate / baseline_rate:>9.1f}x{note}"
        )
        if held and ours_rate < TARGET_PER_SECOND:
            missed.append(name)
    if missed:
        print(f"MISSES the target of {TARGET_PER_SECOND:,}/s on: {', '.join(missed)}")
    else:
        print(f"meets the target of {TARGET_PER_SECOND:,}/s on every shape up to {MAX_RESPONSE_TOKENS} tokens")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
