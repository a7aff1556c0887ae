"""The errors of a training that the same spec would meet again: exit code EXIT_CONFIG_ERROR (the Job
then fails at once, without retries). See `soundmind.errors`."""

from __future__ import annotations

from soundmind.errors import EXIT_CONFIG, SoundMindError


class ConfigError(SoundMindError):
    """`field` is the spec field to change (camelCase path, e.g. `algorithm.maxPromptLength`)."""

    exit_code = EXIT_CONFIG
    kind = "invalid configuration"

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class PreflightError(SoundMindError):
    """The pod's node cannot run the training as specified (`soundmind.train.preflight`): the message
    names the node, and for each problem what was found and what is needed."""

    exit_code = EXIT_CONFIG
    kind = "preflight failed"
