"""The answer-format contract shared by data preparation (the instruction the model reads) and the
SoundMind-RL reward (what it checks). One constant, so the two can never disagree."""

ENTAILED = "entailed"
NOT_ENTAILED = "not-entailed"
LABELS = (NOT_ENTAILED, ENTAILED)  # index = ALR label (0 = not-entailed, 1 = entailed)

ANSWER_INSTRUCTION = (
    "Think through the problem step by step inside <think>...</think>. "
    "After </think>, give your final answer on its own last line, exactly as "
    f"'Answer: {ENTAILED}' or 'Answer: {NOT_ENTAILED}'."
)


def label_to_answer(label: int) -> str:
    """ALR label (0/1) to its answer string; anything else is a ValueError naming the value."""
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1):
        raise ValueError(f"label must be 0 (not-entailed) or 1 (entailed), got {label!r}")
    return LABELS[label]
