"""The one error for a spec, data set or verl override that cannot work: `soundmind train` turns it
into exit code EXIT_CONFIG_ERROR (the Job then fails at once, without retries)."""

from __future__ import annotations


class ConfigError(Exception):
    """`field` is the spec field to change (camelCase path, e.g. `algorithm.maxPromptLength`)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
