"""`soundmind eval` end to end against a loopback OpenAI-compatible server (real HTTP)."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import wave
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from soundmind.cli import main
from soundmind.prompt import ANSWER_INSTRUCTION, ENTAILED, LABELS, NOT_ENTAILED
from tests.support.openai_server import ChatServer, prompt_text

ROWS = 12


def wav(seed: int) -> bytes:
    """A tiny 16 kHz mono WAV whose samples differ per seed (so each row's audio is recognisable)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes([seed % 256, 0]) * 160)
    return buffer.getvalue()


def gold_of(index: int) -> str:
    return LABELS[index % 2]


def write_parquet(path: Path, rows: int = ROWS, audio: bool = True) -> Path:
    """Rows in the prepared format; audio entries vary between embedded bytes, relative and absolute paths."""
    records = []
    for i in range(rows):
        entries = []
        if audio:
            (path.parent / f"q{i}.wav").write_bytes(wav(i))
            entries = [
                {"bytes": wav(i), "path": None},
                {"bytes": None, "path": f"q{i}.wav"},
                {"bytes": None, "path": str(path.parent / f"q{i}.wav")},
            ][i % 3 : i % 3 + 1]
        content = (f"<audio>\nsample-{i}\n" if audio else f"sample-{i} premises...\n") + ANSWER_INSTRUCTION
        records.append(
            {
                "data_source": "soundmind/alr",
                "prompt": [{"role": "user", "content": content}],
                "audios": entries,
                "reward_model": {"style": "rule", "ground_truth": gold_of(i)},
                "extra_info": {"id": f"id{i:04d}", "index": i, "split": "test"},
            }
        )
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def sample_of(body: dict) -> int:
    return int(re.search(r"sample-(\d+)", prompt_text(body)).group(1))


def scripted(body: dict) -> tuple[int, str]:
    """Row i%4: 0 right and well formed, 1 wrong, 2 no answer, 3 right but unformatted."""
    i = sample_of(body)
    gold, other = gold_of(i), gold_of(i + 1)
    return 200, [
        f"<think>reasoning</think>\nAnswer: {gold}",
        f"<think>reasoning</think>\nAnswer: {other}",
        "I cannot tell.",
        f"The answer is {gold}.",
    ][i % 4]


def run_eval(tmp_path: Path, endpoint: str, data: Path, *extra: str) -> tuple[int, dict | None]:
    report = tmp_path / "out" / "report.json"
    args = ["eval", "--endpoint", endpoint, "--model", "soundmind", "--data", str(data), "--report", str(report)]
    code = main([*args, "--backoff", "0.001", *extra])
    return code, json.loads(report.read_text()) if report.exists() else None


def test_scores_every_row_and_sends_audio_as_input_audio_parts(tmp_path, capsys):
    data = write_parquet(tmp_path / "test.parquet")
    with ChatServer(scripted) as server:
        code, report = run_eval(tmp_path, server.url, data, "--concurrency", "4")
    assert code == 0
    assert report["complete"] and report["requests"] == {
        "rows": ROWS, "answered": ROWS, "failed": 0, "not_sent": 0, "retries": 0, "errors": {},
    }  # fmt: skip
    assert report["accuracy"] == pytest.approx(6 / 12)  # rows 0 and 3 of every 4
    assert report["unparseable_rate"] == pytest.approx(3 / 12)
    assert report["format_rate"] == pytest.approx(6 / 12)  # right or wrong, rows 0 and 1 are well formed
    expected = {gold: Counter() for gold in LABELS}
    for i in range(ROWS):
        expected[gold_of(i)][[gold_of(i), gold_of(i + 1), "unparseable", gold_of(i)][i % 4]] += 1
    for gold in LABELS:
        assert report["confusion"][gold] == {p: expected[gold][p] for p in (*LABELS, "unparseable")}
    assert [row["id"] for row in report["rows"]] == [f"id{i:04d}" for i in range(ROWS)]
    assert report["latency_s"]["p50"] > 0 and report["latency_s"]["p95"] >= report["latency_s"]["p50"]
    assert report["requests_per_second"] > 0

    assert len(server.requests) == ROWS
    for body in server.requests:
        i = sample_of(body)
        assert body["model"] == "soundmind"
        parts = body["messages"][0]["content"]
        assert parts[0] == {
            "type": "input_audio",
            "input_audio": {"data": base64.b64encode(wav(i)).decode(), "format": "wav"},
        }
        assert [p["type"] for p in parts] == ["input_audio", "text"]
        assert "<audio>" not in parts[1]["text"] and ANSWER_INSTRUCTION in parts[1]["text"]

    out = capsys.readouterr().out
    assert "accuracy 0.500" in out and "unparseable 0.250" in out and "p95" in out
    assert re.search(rf"{ENTAILED}\s+\d+\s+\d+\s+\d+", out) and NOT_ENTAILED in out


def test_text_only_rows_are_plain_messages(tmp_path):
    data = write_parquet(tmp_path / "text.parquet", rows=4, audio=False)
    with ChatServer(scripted) as server:
        code, report = run_eval(tmp_path, server.url + "/v1/", data)
    assert code == 0 and report["requests"]["answered"] == 4
    assert all(isinstance(body["messages"][0]["content"], str) for body in server.requests)


def test_an_echoed_prompt_is_no_answer(tmp_path):
    # The instruction names both answers, so a server that repeats the prompt answers nothing.
    data = write_parquet(tmp_path / "test.parquet", rows=6)
    with ChatServer(lambda body: (200, prompt_text(body))) as server:
        code, report = run_eval(tmp_path, server.url, data)
    assert code == 0
    assert report["unparseable_rate"] == 1.0 and report["accuracy"] == 0.0


def test_transient_server_errors_are_retried(tmp_path):
    seen: Counter = Counter()
    lock = threading.Lock()

    def flaky(body: dict) -> tuple[int, str]:
        with lock:
            seen[sample_of(body)] += 1
            first = seen[sample_of(body)] == 1
        return (503, "warming up") if first else scripted(body)

    data = write_parquet(tmp_path / "test.parquet", rows=6)
    with ChatServer(flaky) as server:
        code, report = run_eval(tmp_path, server.url, data)
    assert code == 0
    assert report["requests"]["answered"] == 6 and report["requests"]["retries"] == 6
    assert len(server.requests) == 12


def test_persistent_server_errors_fail_with_counts_and_a_partial_report(tmp_path, capsys):
    def broken_for_some(body: dict) -> tuple[int, str]:
        return (500, "boom") if sample_of(body) in (1, 4) else scripted(body)

    data = write_parquet(tmp_path / "test.parquet", rows=6)
    with ChatServer(broken_for_some) as server:
        code, report = run_eval(tmp_path, server.url, data, "--retries", "2")
    assert code == 1
    assert not report["complete"]
    assert report["requests"]["answered"] == 4 and report["requests"]["failed"] == 2
    assert report["requests"]["errors"] == {"HTTP 500": 2}
    assert len(server.requests) == 4 + 2 * 3  # every failing row tried 1 + 2 times
    assert {row["id"]: row["error"] for row in report["rows"] if row["error"]} == {
        "id0001": "HTTP 500",
        "id0004": "HTTP 500",
    }
    err = capsys.readouterr().err
    assert (
        "2 of 6 requests failed for good (HTTP 500: 2, after 3 attempts each)" in err
        and "Partial report written" in err
    )


def test_client_errors_are_not_retried(tmp_path):
    data = write_parquet(tmp_path / "test.parquet", rows=3)
    with ChatServer(lambda body: (413, "too large")) as server:
        code, report = run_eval(tmp_path, server.url, data)
    assert code == 1 and len(server.requests) == 3
    assert list(report["requests"]["errors"]) == [
        "HTTP 413 (request too large: raise the server's request-body limit for base64 audio)"
    ]


def test_unreachable_endpoint_stops_after_consecutive_failures(tmp_path, capsys):
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = write_parquet(tmp_path / "test.parquet", rows=8)
    code, report = run_eval(
        tmp_path, f"http://127.0.0.1:{port}", data, "--concurrency", "1", "--retries", "1",
        "--max-consecutive-failures", "3",
    )  # fmt: skip
    assert code == 1
    assert report["requests"]["failed"] == 3 and report["requests"]["not_sent"] == 5
    assert report["requests"]["errors"] == {"connection error (ConnectError)": 3}
    assert "looks down" in report["stopped"]
    err = capsys.readouterr().err
    assert "3 of 8 requests failed" in err and "5 not sent" in err


def test_a_bad_row_stops_the_run_naming_it_and_keeps_what_was_answered(tmp_path):
    data = write_parquet(tmp_path / "test.parquet", rows=4)
    table = pq.read_table(data).to_pylist()
    table[2]["audios"] = []  # a placeholder without audio
    pq.write_table(pa.Table.from_pylist(table), data)
    with ChatServer(scripted) as server:
        code, report = run_eval(tmp_path, server.url, data, "--concurrency", "1")
    assert code == 1
    assert "row 2 (id id0002)" in report["stopped"] and "placeholders" in report["stopped"]
    assert report["requests"]["answered"] == 2 and report["requests"]["not_sent"] == 2


def test_missing_data_file_is_a_usage_error(tmp_path, capsys):
    assert (
        main(["eval", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--data", str(tmp_path / "no.parquet")]) == 2
    )
    assert "cannot read --data" in capsys.readouterr().err
