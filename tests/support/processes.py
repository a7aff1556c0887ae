"""A program a test starts beside the cluster (KEDA, Prometheus, a vLLM stand-in): in its own process
group, killed by Linux if the test process dies first, its output in a log file; :meth:`stop` ends
that group and nothing else. Same rules as the cluster's own components (:mod:`tests.support.localcluster`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.localcluster import _die_with_parent, _log_excerpt, _signal_group


class LocalProcess:
    def __init__(self, name: str, argv: list[str], log: Path, *, env: dict[str, str] | None = None):
        self.name, self.argv, self.log = name, argv, log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, *, stdout_pipe: bool = False) -> LocalProcess:
        """Start it; with ``stdout_pipe`` its stdout is readable (``self.process.stdout``), stderr
        still goes to the log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
                text=stdout_pipe,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def check(self, doing: str) -> None:
        """Raise, quoting the log, when it has exited."""
        if self.exited():
            code = self.process.returncode if self.process else None
            raise AssertionError(f"{self.name} exited ({code}) while {doing}; its log ({self.log}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10) -> None:
        if self.exited():
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        give_up = time.monotonic() + timeout
        while not self.exited() and time.monotonic() < give_up:
            time.sleep(0.05)
        if not self.exited():
            _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        if self.process.stdout:
            self.process.stdout.close()

    def log_tail(self, lines: int = 25) -> str:
        return _log_excerpt(self.log, lines)
