"""`soundmind eval` under bad input and bad servers (issue 10): a null answer is a server fault, a
trickling server cannot hold a request past --timeout, a signal writes the partial report within
seconds, an unwritable report is found before the first request, and bad URLs and numbers are
usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from soundmind.cli import main
from soundmind.errors import EXIT_CANNOT_WRITE, EXIT_INCOMPLETE, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE
from tests.support.openai_server import ChatServer, SlowServer
from tests.unit.eval.test_eval_endpoint import run_eval, scripted, write_parquet


def test_null_content_is_a_server_fault_not_an_unparseable_answer(tmp_path, capsys):
    data = write_parquet(tmp_path / "test.parquet", rows=4)
    with ChatServer(lambda body: (200, None)) as server:
        code, report = run_eval(tmp_path, server.url, data)
    assert code == EXIT_INCOMPLETE and not report["complete"]
    assert report["requests"]["failed"] == 4 and report["requests"]["answered"] == 0
    (reason,) = report["requests"]["errors"]
    assert reason.startswith("server fault: choices[0].message.content is null")
    assert len(server.requests) == 4  # a fault the same request would repeat: not retried
    assert "not retried" in capsys.readouterr().err


def test_timeout_is_a_deadline_for_the_whole_request(tmp_path):
    data = write_parquet(tmp_path / "test.parquet", rows=1)
    started = time.monotonic()
    with SlowServer(byte_every=0.2) as server:  # ~90 bytes: ~18 s to answer in full
        code, report = run_eval(tmp_path, server.url, data, "--timeout", "1", "--retries", "0")
    elapsed = time.monotonic() - started
    assert code == EXIT_INCOMPLETE and elapsed < 6, elapsed
    assert list(report["requests"]["errors"]) == ["timeout (no complete response within 1 s)"]


def test_retries_are_reported_as_made(tmp_path, capsys):
    data = write_parquet(tmp_path / "test.parquet", rows=2)
    with ChatServer(lambda body: (400, "bad request")) as server:
        code, _ = run_eval(tmp_path, server.url, data)
    assert code == EXIT_INCOMPLETE and len(server.requests) == 2
    err = capsys.readouterr().err
    assert "2 of 2 requests failed for good (HTTP 400: 2, not retried)" in err and "after 3 retries" not in err


@pytest.mark.parametrize(("signum", "expected"), [(signal.SIGTERM, EXIT_SIGTERM), (signal.SIGINT, EXIT_SIGINT)])
def test_a_signal_cancels_in_flight_requests_and_writes_the_partial_report(tmp_path, signum, expected):
    data = write_parquet(tmp_path / "test.parquet", rows=40)
    report = tmp_path / "report.json"
    with SlowServer() as server:  # never answers
        command = [sys.executable, "-m", "soundmind", "eval", "--endpoint", server.url, "--model", "m"]
        command += ["--data", str(data), "--report", str(report), "--concurrency", "4"]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while server.received < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received == 4
        process.send_signal(signum)
        sent = time.monotonic()
        _, err = process.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    assert process.returncode == expected, err
    assert stopped_after < 3, stopped_after
    written = json.loads(report.read_text())
    assert written["stopped"] == f"interrupted by {signal.Signals(signum).name}"
    assert written["requests"]["answered"] == 0 and written["requests"]["not_sent"] == 40
    assert server.received == 4  # nothing more was sent after the signal
    assert "Partial report written" in err


@pytest.mark.parametrize("where", ["directory", "under-a-file"])
def test_an_unwritable_report_is_found_before_the_first_request(tmp_path, capsys, where):
    data = write_parquet(tmp_path / "test.parquet", rows=2)
    if where == "directory":
        report = tmp_path / "a-dir"
        report.mkdir()
    else:
        (tmp_path / "a-file").write_text("")
        report = tmp_path / "a-file" / "report.json"
    with ChatServer(scripted) as server:
        argv = ["eval", "--endpoint", server.url, "--model", "m", "--data", str(data), "--report", str(report)]
        assert main(argv) == EXIT_CANNOT_WRITE
    assert server.requests == []
    assert f"cannot write {report if where == 'directory' else report.parent}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "endpoint",
    ["soundmind:8000", "localhost", "ftp://host", "http://", "http://host:99999", "http://host:port", "http://h/?q=1"],
)
def test_malformed_endpoints_are_usage_errors(tmp_path, capsys, endpoint):
    data = write_parquet(tmp_path / "test.parquet", rows=1)
    argv = ["eval", "--endpoint", endpoint, "--model", "m", "--data", str(data), "--report", str(tmp_path / "r.json")]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"soundmind eval: --endpoint {endpoint!r}") and "e.g. http://soundmind:8000" in err
    assert not os.path.exists(tmp_path / "r.json")
