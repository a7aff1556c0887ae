"""SoundMind-RL reward. verl loads it from this file: `soundmind train` renders
`reward.custom_reward_function.path=<this __init__.py> reward.custom_reward_function.name=compute_score`
and the spec's weights as `+reward.custom_reward_function.reward_kwargs.answer_weight=2.0` (etc.)."""

from soundmind.reward.answer import parse_answer, read_response
from soundmind.reward.score import DEFAULT_WEIGHTS, compute_score

__all__ = ["DEFAULT_WEIGHTS", "compute_score", "parse_answer", "read_response"]
