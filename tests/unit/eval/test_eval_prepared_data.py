"""`soundmind eval` on rows made by `soundmind data synth` + `soundmind data prepare` (real format)."""

from __future__ import annotations

import base64
import json

import pyarrow.parquet as pq
import pytest

from soundmind.cli import main
from soundmind.prompt import ENTAILED
from tests.support.openai_server import ChatServer


@pytest.mark.parametrize("audio_ref", ["bytes", "path"])
def test_eval_reads_prepared_audio_rows(tmp_path, audio_ref):
    assert main(["data", "synth", "--out", str(tmp_path / "alr"), "--limit", "4"]) == 0
    prepared = tmp_path / "prepared"
    argv = ["data", "prepare", "--data-dir", str(tmp_path / "alr"), "--out", str(prepared)]
    assert main([*argv, "--modality", "audio-text", "--audio-ref", audio_ref]) == 0
    data = next(prepared.glob("*.parquet"))
    golds = [row["reward_model"]["ground_truth"] for row in pq.read_table(data).to_pylist()]

    with ChatServer(lambda body: (200, f"<think>always</think>\nAnswer: {ENTAILED}")) as server:
        report_path = tmp_path / "report.json"
        code = main(
            ["eval", "--endpoint", server.url, "--model", "m", "--data", str(data), "--report", str(report_path)]
        )
    report = json.loads(report_path.read_text())
    assert code == 0 and report["requests"]["answered"] == len(golds) == len(server.requests)
    assert report["accuracy"] == pytest.approx(golds.count(ENTAILED) / len(golds))
    for body in server.requests:
        audio = [p for p in body["messages"][-1]["content"] if p["type"] == "input_audio"]
        assert len(audio) == 1 and base64.b64decode(audio[0]["input_audio"]["data"])[8:12] == b"WAVE"
