"""The one error type of the workload commands, and the exit codes they document.

Every command raises a `SoundMindError` subclass for a problem the user can act on; `soundmind.cli`
prints its message (no traceback) and exits with its `exit_code`. The subclasses live here, each with
the details it knows, so any module can raise one without importing another area: `DataError`
(split, line, id), `ConfigError` (the spec field), `PreflightError` (the node), `UsageError`,
`OutputError`.

Exit codes:

    0    success
    1    eval: the run is incomplete (some rows unanswered; the partial report is written)
    2    bad arguments or bad input data (argparse's own code for usage errors)
    73   an output cannot be written (EX_CANTCREAT): permissions, a full disk, a path that is a file
    78   train: the spec, the data set or a verl override cannot work, or the pod's node cannot run it
         (driver, GPUs, /dev/shm: `soundmind.train.preflight`) (EX_CONFIG; never retried)
    130  interrupted by SIGINT (128 + 2)
    143  terminated by SIGTERM (128 + 15), what a pod gets when it is deleted
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_CANNOT_WRITE = 73
EXIT_CONFIG = 78


def exit_code_for_signal(signum: int) -> int:
    return 128 + signum


EXIT_SIGINT = exit_code_for_signal(signal.SIGINT)
EXIT_SIGTERM = exit_code_for_signal(signal.SIGTERM)


class SoundMindError(Exception):
    """A problem the user can act on; the message says what, where, and what would be valid."""

    exit_code = EXIT_USAGE
    kind = ""  # what kind of problem, shown before the message ("invalid configuration")


class UsageError(SoundMindError):
    """An argument that cannot work (found after argparse, e.g. a URL without a scheme)."""

    exit_code = EXIT_USAGE


class OutputError(SoundMindError):
    """An output path that cannot be written."""

    exit_code = EXIT_CANNOT_WRITE

    def __init__(self, path: object, exc: OSError | str):
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        self.path = path
        super().__init__(f"cannot write {path}: {reason}")


class DataError(SoundMindError):
    """Bad input data. The message names where: split, line of the annotation file, and sample id
    (each when known), then what is wrong and what would be valid."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str, *, split: str | None = None, line: int | None = None, sample_id=None):
        self.reason = reason
        self.split = split
        self.line = line
        self.sample_id = sample_id
        where = [
            f"split {split!r}" if split is not None else None,
            f"line {line}" if line is not None else None,
            f"id {sample_id!r}" if sample_id is not None else None,
        ]
        where_text = ", ".join(part for part in where if part)
        super().__init__(f"{where_text}: {reason}" if where_text else reason)


class ConfigError(SoundMindError):
    """A spec, data set, verl override or vLLM argument that cannot work (exit code EXIT_CONFIG: the Job
    then fails at once, without retries). `field` is the spec field to change (camelCase path, e.g.
    `algorithm.maxPromptLength`)."""

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
