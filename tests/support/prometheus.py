"""A real Prometheus (Debian's package, `make deps`) on loopback, scraping targets the test names.

Its only scrape job reads a ``file_sd`` target list that :meth:`Prometheus.set_targets` rewrites
(atomically: Prometheus watches the file), each group with the labels a Kubernetes pod scrape
gives its series; so a query written for a real cluster runs unchanged. Scrape interval: 1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.support.prerequisite import missing
from tests.support.processes import LocalProcess

SCRAPE_JOB = "vllm"
SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    """Debian's prometheus; fails under CI=true when it is missing, skips elsewhere."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
    if found:
        return found
    message = "prometheus is not installed (Debian package prometheus: `make deps` installs it)"
    missing(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.targets_file = workdir / "targets.json"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: LocalProcess | None = None

    def start(self, timeout: float = 60) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.set_targets([])
        config = {
            "global": {
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        argv = [
            prometheus_binary(),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.process = LocalProcess("prometheus", argv, self.workdir / "prometheus.log").start()
        deadline = time.monotonic() + timeout
        while not self._ready():
            self.process.check("starting")
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus not ready after {timeout}s:\n{self.process.log_tail()}")
            time.sleep(0.2)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def set_targets(self, groups: list[dict]) -> None:
        """The scrape targets: ``[{"targets": ["127.0.0.1:PORT"], "labels": {...}}, ...]``."""
        staged = self.targets_file.with_suffix(".tmp")
        staged.write_text(json.dumps(groups))
        staged.replace(self.targets_file)

    def query(self, promql: str) -> list[dict]:
        """An instant query's vector: ``[{"metric": {...}, "value": [time, "text"]}, ...]``."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus query {promql!r} failed: {body}")
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The value of a query that returns at most one series; None for an empty result."""
        result = self.query(promql)
        if len(result) > 1:
            raise AssertionError(f"{promql!r} returned {len(result)} series, not one")
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process:
            self.process.stop()
