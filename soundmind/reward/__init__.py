"""SoundMind-RL reward. verl loads it with
`reward.custom_reward_function.path=pkg://soundmind.reward reward.custom_reward_function.name=compute_score`;
weights override with `+reward.custom_reward_function.reward_kwargs.answer_weight=2.0` (etc.)."""

from soundmind.reward.answer import parse_answer, read_response
from soundmind.reward.score import DEFAULT_WEIGHTS, compute_score

__all__ = ["DEFAULT_WEIGHTS", "compute_score", "parse_answer", "read_response"]
