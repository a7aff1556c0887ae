"""Every dashboard panel's query and every alert's expression, evaluated against a real Prometheus
scraping real exporters: the dashboards and alerts are proven on data, not only on their schema.

A real Prometheus (Debian's, 1 s scrapes, file_sd targets labelled as a Kubernetes pod scrape labels
them) scrapes:

* the real operator (as its ServiceAccount, committed RBAC) reconciling a training whose first
  attempt fails (kwok ends its driver pod with exit code 1), so it retries once, and a serving of
  two replicas;
* the real trainer progress exporter (`ProgressReporter` + `TrainMetrics`) following the recorded
  verl 0.9.1 file-logger stream (tests/fixtures/verl_file_logger.jsonl) replayed step by step;
* a vLLM stand-in for each of the serving's Ready pods, under a bounded load of audio chat
  requests, so counters and histograms move and rates are not empty.

Then the committed dashboards (charts/soundmind-operator/dashboards/, written by `hack/charts`) and
rule file (charts/soundmind-operator/rules/) are read, template variables substituted as Grafana
would, and each query sent to Prometheus' HTTP API. A panel query returning no series fails; every
alert expression must evaluate, the retrying alert must fire, the ones the data rules out must not.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import wave
from pathlib import Path

import pytest
import yaml

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from soundmind.train import contract
from soundmind.train.metrics import TrainMetrics
from soundmind.train.progress import ProgressReporter, status_patcher
from soundmind_operator.training import names as training_names
from tests.support import operator as op
from tests.support import resources, sim
from tests.support.kube import Kube
from tests.support.load import LoadGenerator
from tests.support.poll import wait_for
from tests.support.prometheus import Prometheus
from tests.support.standins import Simulation, StandinFleet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "charts" / "soundmind-operator" / "dashboards"
RULES = ROOT / "charts" / "soundmind-operator" / "rules" / "soundmind.rules.yaml"
FIXTURE = ROOT / "tests" / "fixtures" / "verl_file_logger.jsonl"
TRAINING_NAME = "alr"
SERVING_NAME = "omni"
SERVED_MODEL_NAME = "alr-omni"
IMAGE = "registry.invalid/soundmind/sim:latest"  # never pulled: kwok runs no containers
TOTAL_STEPS = 12
RATE_INTERVAL = "10s"  # Grafana's $__rate_interval at a 1 s scrape is 4 s; 10 s is steadier on a busy machine

# Panel queries that cannot have data here, with the reason. Keep it tiny.
NO_DATA_EXPECTED: dict[str, str] = {}

# Alerts the data must make fire, and ones it must leave silent (the rest only have to evaluate).
MUST_FIRE = {"SoundMindTrainingRetrying": "the training's first attempt failed and was retried"}
MUST_BE_SILENT = {
    "SoundMindOperatorDown": "the operator is scraped and up",
    "SoundMindTrainingFailed": "the retry runs; nothing failed for good",
    "SoundMindServingNoReadyReplicas": "both replicas are Ready",
    "SoundMindServingAtMaxReplicas": "autoscaling is off: 2 fixed replicas, no autoscaler out of room",
    "SoundMindOperatorReconcileErrors": "no reconcile pass raised",
}


class SharedTargets:
    """The stand-in fleet's target list plus fixed groups (operator, trainer) in one file_sd file."""

    def __init__(self, prometheus: Prometheus, fixed: list[dict]):
        self.prometheus, self.fixed = prometheus, fixed
        self.set_targets([])

    def set_targets(self, groups: list[dict]) -> None:
        self.prometheus.set_targets([*self.fixed, *groups])


def audio_request(model: str, seconds: float = 0.5) -> bytes:
    """A chat request with one WAV clip (silence), as `soundmind eval` sends audio."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(16000)
        clip.writeframes(b"\0\0" * int(16000 * seconds))
    audio = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(buffer.getvalue()).decode(), "format": "wav"},
    }
    content = [audio, {"type": "text", "text": "What is said? Answer in <answer></answer>."}]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 64}
    return json.dumps(body).encode()


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expr) for every target of every panel, rows included."""
    found = []

    def walk(dashboard: str, panels: list[dict]) -> None:
        for panel in panels:
            walk(dashboard, panel.get("panels") or [])
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    found.append((dashboard, panel.get("title", ""), target["expr"]))

    for path in sorted(DASHBOARDS.glob("*.json")):
        walk(path.stem, json.loads(path.read_text())["panels"])
    return found


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def substitute(expr: str, namespace: str) -> str:
    """Grafana's template variables as a dashboard user looking at this test's objects sets them."""
    values = {
        "namespace": namespace,
        "training": TRAINING_NAME,
        "serving": SERVING_NAME,
        "__rate_interval": RATE_INTERVAL,
        "__interval": "2s",
        "__range": "5m",
    }
    result = re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), expr)
    assert "$" not in result, f"a template variable the test does not know: {result}"
    return result


def replay_verl_log(log_path: Path, checkpoint_dir: Path, stop: threading.Event, seconds_per_step: float) -> None:
    """Write the recorded verl log (and checkpoints) as verl would, one step every ``seconds_per_step``."""
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    with log_path.open("a", buffering=1) as log:
        for record in records:
            if stop.wait(seconds_per_step):
                return
            if record["step"] % 5 == 0:  # verl saves the checkpoint before it logs the step
                (checkpoint_dir / f"global_step_{record['step']}").mkdir(exist_ok=True)
                (checkpoint_dir / "latest_checkpointed_iteration.txt").write_text(str(record["step"]))
            log.write(json.dumps(record) + "\n")


def running_pod(kube: Kube, ns: str, job: str):
    def check():
        pods = kube.core_v1.list_namespaced_pod(ns, label_selector=f"{training_names.JOB_NAME_LABEL}={job}").items
        return next((p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp), None)

    return wait_for(check, timeout=60, what=f"a running pod of Job {ns}/{job}")


def test_every_panel_and_alert_query_on_real_data(kube: Kube, ns: str, operator: op.OperatorProcess, tmp_path: Path):
    began = time.monotonic()
    prometheus = Prometheus(tmp_path / "prometheus").start()
    stops: list = [prometheus.stop]
    try:
        _run(kube, ns, operator, prometheus, tmp_path, stops, began)
    finally:
        for stop in reversed(stops):
            stop()


def _run(kube: Kube, ns: str, operator: op.OperatorProcess, prometheus: Prometheus, tmp_path: Path, stops, began):
    # -- the trainer's progress exporter, labelled as the chart's PodMonitor labels its series ----
    metrics = TrainMetrics()
    server = metrics.serve(0, "127.0.0.1")
    stops.append(server.shutdown)
    targets = SharedTargets(
        prometheus,
        [
            {"targets": [f"127.0.0.1:{operator.metrics_port}"], "labels": {"job": "soundmind-operator"}},
            {
                "targets": [f"127.0.0.1:{server.server_port}"],
                "labels": {
                    "job": "soundmind-trainer",
                    "namespace": ns,
                    "training": TRAINING_NAME,
                    "pod": f"{TRAINING_NAME}-a1-0",
                },
            },
        ],
    )
    wait_for(
        lambda: prometheus.value('sum(up{job=~"soundmind-operator|soundmind-trainer"})') == 2,
        timeout=60,
        what="Prometheus scraping the operator and the trainer exporter",
    )

    # -- a training that retries once ------------------------------------------------------------
    training = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": TRAINING.kind,
        "metadata": {"name": TRAINING_NAME},
        "spec": {"image": IMAGE, "maxRetries": 2},
    }
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, training)
    first = running_pod(kube, ns, f"{TRAINING_NAME}-a1")
    retries = f'soundmind_training_retries_total{{namespace="{ns}",training="{TRAINING_NAME}"}}'
    wait_for(lambda: prometheus.value(retries) == 0, timeout=30, what="the retries counter scraped at 0")
    kube.core_v1.patch_namespaced_pod(
        first.metadata.name,
        ns,
        {"metadata": {"annotations": {sim.EXIT_CODE: "1", sim.EXIT_MESSAGE: "NCCL error: unhandled system error"}}},
    )
    running_pod(kube, ns, f"{TRAINING_NAME}-a2")

    # -- the progress reporter, following verl's log as in the training's pod -----------------------
    checkpoint_dir = tmp_path / TRAINING_NAME
    log_path = Path(contract.attempt_log_path(str(checkpoint_dir), attempt=2))
    log_path.parent.mkdir(parents=True)
    reporter = ProgressReporter(
        log_path,
        checkpoint_dir,
        metrics,
        status_patcher(kube.api_client, ns, TRAINING_NAME),
        total_steps=TOTAL_STEPS,
        interval=0.5,
    )
    stop = threading.Event()
    stops.append(stop.set)
    threads = [
        threading.Thread(target=reporter.run, args=(stop, 0.2), daemon=True),
        threading.Thread(target=replay_verl_log, args=(log_path, checkpoint_dir, stop, 1.5), daemon=True),
    ]
    for thread in threads:
        thread.start()

    # -- a serving of two replicas, a vLLM stand-in for each, under a bounded load ------------------
    serving = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SERVING.kind,
        "metadata": {"name": SERVING_NAME},
        "spec": {
            "model": "Qwen/Qwen2.5-Omni-7B",
            "servedModelName": SERVED_MODEL_NAME,
            "image": IMAGE,
            "replicas": 2,
            "autoscaling": {"enabled": False},
            "resources": {"cpu": "1", "memory": "1Gi"},
            "vllm": {"extraArgs": ["--max-num-seqs=2"]},
        },
    }
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, serving)
    fleet = StandinFleet(
        kube, ns, SERVING_NAME, targets, tmp_path / "standins", Simulation(seconds_per_output_token=0.02)
    )
    fleet.start()
    stops.append(fleet.stop)
    load = LoadGenerator(fleet.endpoints, [audio_request(SERVED_MODEL_NAME)], max_requests=2000, deadline_seconds=150)
    stops.append(load.stop)
    load.set_clients(6)  # 2 replicas x 2 slots: 2 wait on average, so the queue panels move too

    # -- enough data: the whole log replayed and scraped, the load answered on both replicas ------
    def ready() -> bool:
        fleet.check()
        return (
            prometheus.value(f'max(soundmind_train_step{{namespace="{ns}"}})') == TOTAL_STEPS
            and prometheus.value(f'count(vllm:e2e_request_latency_seconds_count{{namespace="{ns}"}} > 0)') == 2
            and prometheus.value(f'soundmind_serving_replicas_ready{{namespace="{ns}",serving="{SERVING_NAME}"}}') == 2
            and (prometheus.value(retries) or 0) == 1
        )

    wait_for(ready, timeout=120, interval=1, what="the training, exporter and serving data scraped")
    resources.wait(
        kube, TRAINING, ns, TRAINING_NAME, lambda t: (t.get("status") or {}).get("attempt") == 2, "attempt 2", 10
    )
    time.sleep(3)  # a few more scrapes under load, so every rate window holds moving counters
    data_at = time.monotonic() - began

    # -- every panel query returns series ----------------------------------------------------------
    panels = panel_queries()
    empty, report = [], []
    for dashboard, title, expr in panels:
        query = substitute(expr, ns)
        result = prometheus.query(query)
        report.append(f"{len(result):3d} series  {dashboard}: {title}")
        if not result and expr not in NO_DATA_EXPECTED:
            empty.append(f"{dashboard}: {title}: {query}")

    # -- every alert evaluates; the data decides a few of them -------------------------------------
    rules = alert_rules()
    firing = {}
    for rule in rules:
        firing[rule["alert"]] = len(prometheus.query(rule["expr"]))
    load.stop()
    elapsed = time.monotonic() - began
    print("\n".join(report))
    print(
        f"{len(panels)} panel queries ({len(panels) - len(empty)} with data), {len(rules)} alert expressions "
        f"({sum(1 for n in firing.values() if n)} returning series: "
        f"{sorted(a for a, n in firing.items() if n)}); data ready after {data_at:.0f}s, all done in {elapsed:.0f}s; "
        f"load: {load.answered} answered, {load.failed} failed"
    )
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    assert len(panels) >= 30 and len(rules) >= 11
    for alert, why in MUST_FIRE.items():
        assert firing[alert], f"{alert} returns nothing, but {why}"
    for alert, why in MUST_BE_SILENT.items():
        assert not firing[alert], f"{alert} returns series, but {why}"
    assert load.failed == 0, dict(load.errors)
