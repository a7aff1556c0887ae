"""The vLLM stand-in over real HTTP: vLLM's routes and metrics, finite capacity, and answers that
`soundmind eval` scores as configured, on rows made by `soundmind data synth` + `prepare`."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from soundmind.api import vllm_metrics as metrics
from soundmind.api.serving import ServingSpec
from soundmind.cli import main
from soundmind.eval.requests import chat_request, read_items
from soundmind.serve.render import vllm_arguments
from soundmind.serve.standin import Behaviour, StandIn, answer_key, make_server, vllm_serve_arguments

FAST = Behaviour(prefill_seconds_per_audio_second=0.0, seconds_per_output_token=0.0, output_tokens=16)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("standin")
    assert main(["data", "synth", "--out", str(work / "alr"), "--limit", "8"]) == 0
    argv = ["data", "prepare", "--data-dir", str(work / "alr"), "--out", str(work / "prepared")]
    assert main([*argv, "--modality", "audio-text", "--audio-ref", "bytes"]) == 0
    return next((work / "prepared").glob("*.parquet"))


class Running:
    def __init__(self, standin: StandIn):
        self.standin = standin
        self.server = make_server(standin)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def post(self, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def samples(self) -> dict[tuple[str, tuple], float]:
        _, text = self.get("/metrics")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }


@pytest.mark.parametrize("accuracy", [1.0, 0.0])
def test_soundmind_eval_scores_the_configured_accuracy(prepared: Path, tmp_path: Path, accuracy: float):
    standin = StandIn(Behaviour(**{**FAST.__dict__, "accuracy": accuracy}), answer_key(prepared))
    with Running(standin) as server:
        report_path = tmp_path / "report.json"
        argv = ["eval", "--endpoint", server.url, "--model", "soundmind", "--data", str(prepared)]
        assert main([*argv, "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["requests"]["answered"] == 8
    assert report["accuracy"] == accuracy and report["format_rate"] == 1.0


def test_routes_and_refusals_are_vllms(prepared: Path):
    item = next(read_items(prepared))
    with Running(StandIn(FAST)) as server:
        assert server.get("/health")[0] == 200
        (model,) = json.loads(server.get("/v1/models")[1])["data"]
        assert model["id"] == "soundmind" and model["root"] == FAST.model
        status, body = server.post(chat_request(item, model="Qwen/Qwen2.5-Omni-7B", max_tokens=64))
        assert status == 404 and body["error"]["message"] == "The model `Qwen/Qwen2.5-Omni-7B` does not exist."
        status, body = server.post(chat_request(item, model="soundmind", max_tokens=64))
        assert status == 200 and body["choices"][0]["message"]["content"].startswith("<think>")
        assert body["usage"]["completion_tokens"] == 16 and body["usage"]["prompt_tokens"] > 25  # > 1 s of audio
        status, body = server.post(chat_request(item, model="soundmind", max_tokens=4))
        assert status == 200 and body["choices"][0]["finish_reason"] == "length"


def test_metrics_carry_vllms_names_types_and_labels(prepared: Path):
    item = next(read_items(prepared))
    with Running(StandIn(FAST)) as server:
        assert server.post(chat_request(item, model="soundmind", max_tokens=64))[0] == 200
        _, text = server.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    for metric in metrics.ALL:
        # The parser names a counter family without its _total suffix, as vLLM registers it.
        family = families[metric.registered_name]
        assert family.type == metric.kind.value
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(metric.labels)
            assert sample.labels["model_name"] == "soundmind" and sample.labels["engine"] == "0"
    assert f'{metrics.REQUEST_SUCCESS}{{engine="0",finished_reason="stop",model_name="soundmind"}} 1.0' in (
        text.decode()
    )


def test_at_most_max_num_seqs_run_and_the_rest_wait(prepared: Path):
    item = next(read_items(prepared))
    slow = Behaviour(max_num_seqs=2, prefill_seconds_per_audio_second=0.0, seconds_per_output_token=0.02)
    labels = (("engine", "0"), ("model_name", "soundmind"))
    with Running(StandIn(slow)) as server, ThreadPoolExecutor(6) as pool:
        began = time.monotonic()
        sent = [pool.submit(server.post, chat_request(item, model="soundmind", max_tokens=64)) for _ in range(6)]
        deadline = time.monotonic() + 10
        seen = {}
        while time.monotonic() < deadline and seen.get(metrics.NUM_REQUESTS_WAITING) != 4:
            samples = server.samples()
            seen = {m: samples[(m, labels)] for m in (metrics.NUM_REQUESTS_RUNNING, metrics.NUM_REQUESTS_WAITING)}
            time.sleep(0.02)
        assert seen == {metrics.NUM_REQUESTS_RUNNING: 2, metrics.NUM_REQUESTS_WAITING: 4}
        assert all(f.result()[0] == 200 for f in sent)
        # Three rounds of two, each 48 tokens x 20 ms: the queue, not the clients, set the pace.
        assert time.monotonic() - began >= 3 * 48 * 0.02
        after = server.samples()
    assert after[(metrics.NUM_REQUESTS_WAITING, labels)] == 0 == after[(metrics.NUM_REQUESTS_RUNNING, labels)]
    assert after[(metrics.GENERATION_TOKENS, labels)] == 6 * 48
    assert after[(metrics.MM_ITEMS, labels)] == 6


def test_a_serving_pods_vllm_command_line_configures_the_stand_in():
    """The stand-in image's `vllm` takes the arguments the operator gives vLLM: the flags it simulates,
    in either spelling vLLM accepts, and none of the GPU ones."""
    spec = ServingSpec.model_validate(
        {"model": "m", "servedModelName": "alr", "vllm": {"maxModelLen": 8192, "extraArgs": ["--max_num_seqs=4"]}}
    )
    assert vllm_serve_arguments(vllm_arguments(spec, "/models/omni")) == [
        "--model", "/models/omni",
        "--served-model-name", "alr",
        "--max-model-len", "8192",
        "--max-num-seqs", "4",
        "--host", "0.0.0.0",
        "--port", "8000",
    ]  # fmt: skip
    assert vllm_serve_arguments(["--model", "m", "--dtype", "half"]) == ["--model", "m"]


def test_vllm_serve_without_a_model_is_refused_with_the_usage(capsys):
    with pytest.raises(SystemExit):
        vllm_serve_arguments(["--port", "8000"])
    assert "vllm serve MODEL" in capsys.readouterr().err
