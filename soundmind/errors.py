"""The one error type of the workload commands, and the exit codes they document.

Every command raises a `SoundMindError` subclass for a problem the user can act on; `soundmind.cli`
prints its message (no traceback) and exits with its `exit_code`. Each area keeps its own subclass
with the details it knows: `soundmind.data.errors.DataError` (split, line, id) and
`soundmind.train.errors.ConfigError` (the spec field).

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
