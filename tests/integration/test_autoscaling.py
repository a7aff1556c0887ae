"""Autoscaling proven end to end: real KEDA, the real HPA controller and a real Prometheus scale a
SoundMindServing under simulated audio load.

Everything is the real program except the model and the pods' containers: the API server, the
scheduler, the Deployment and HPA controllers, KEDA's operator and metrics adapter (registered as
the external metrics API), Prometheus (scraping every second), and the operator, which turns the
serving into a Deployment and a KEDA ScaledObject whose query sums vLLM's queue over the serving's
pods. kwok marks the pods Ready; a vLLM stand-in runs for each Ready pod, configured from the pod's
own `vllm serve` arguments, with vLLM's metrics; the load is `soundmind data synth` + `prepare`
audio sent as `soundmind eval` sends it.

The numbers are chosen so the right answer is known: each replica runs at most 4 requests
(``--max-num-seqs=4``), the target is 3 waiting requests per replica. 12 clients on one replica
leave 8 waiting, so the HPA must ask for ceil(8 / 3) = 3 replicas, which run all 12 (nothing
waits). 21 clients on 3 replicas leave exactly 3 waiting on each: on target, so it holds at 3. When
the load stops, it returns to 1 replica once the 12 s scale-down stabilization window has passed.

The timeline (one row a second: the queue as KEDA's query sees it, the HPA's decision, the
serving's status) is written to the terminal as it happens, pass or fail.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.cli import main as soundmind
from tests.conftest import EXTERNAL_KUBECONFIG_ENV
from tests.support import localcluster
from tests.support import operator as op
from tests.support.autoscaling import Rig, Sample, loop_components, parse_quantity, prepared_requests
from tests.support.kube import Kube
from tests.support.localcluster import HPA_SYNC_PERIOD_SECONDS
from tests.support.poll import wait_for
from tests.support.standins import Simulation, StandinFleet

pytestmark = pytest.mark.integration

SERVING_NAME = "omni"
SERVED_MODEL_NAME = "alr-omni"  # not the default, so the stand-ins prove they took it from the pods
IMAGE = "registry.invalid/soundmind/server:sim"  # never pulled: kwok runs no containers
MAX_NUM_SEQS = 4
TARGET = 3  # waiting requests per replica
WINDOW = 12  # scaleDownStabilizationSeconds
SCALE_UP_CLIENTS = 12  # one replica: 4 run, 8 wait -> 3 replicas, which run all 12
ON_TARGET_CLIENTS = 21  # 3 replicas x (4 running + 3 waiting)
MAX_REQUESTS = 3000  # bounds on the load generator: far more than the test needs
LOAD_DEADLINE_SECONDS = 300


@pytest.fixture(scope="module")
def say(request: pytest.FixtureRequest):
    """Print a line to the terminal now, past pytest's capture: the timeline belongs in the CI log,
    pass or fail."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    write("")
    return write


@pytest.fixture(scope="module")
def loop_kube(request: pytest.FixtureRequest, cluster_bin_dir: Path) -> Iterator[Kube]:
    """A cluster whose API server can reach 127.0.0.1, where KEDA's adapter listens: the session's
    local cluster, or (when the session runs against another cluster) a local one of our own."""
    if not os.environ.get(EXTERNAL_KUBECONFIG_ENV):
        yield request.getfixturevalue("kube")
        return
    cluster = localcluster.LocalCluster.start(cluster_bin_dir, real_node=False)
    try:
        kube = Kube.connect(cluster.kubeconfig, kubectl=cluster_bin_dir / "kubectl")
        yield kube
        kube.api_client.close()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autoscaling")


@pytest.fixture(scope="module")
def loop(loop_kube: Kube, cluster_bin_dir: Path, keda_bin_dir: Path, workdir: Path, say):
    began = time.monotonic()
    with loop_components(loop_kube, keda_bin_dir, loop_kube.kubeconfig.parent / "pki", workdir, say) as (prom, _):
        say(f"loop components up in {time.monotonic() - began:.1f}s")
        yield prom


@pytest.fixture(scope="module")
def data(workdir: Path) -> tuple[Path, list[bytes]]:
    return prepared_requests(workdir / "data", SERVED_MODEL_NAME)


@pytest.fixture(scope="module")
def rig(loop_kube: Kube, loop, data, workdir: Path, say) -> Iterator[Rig]:
    kube = loop_kube
    namespace = f"autoscaling-{os.urandom(3).hex()}"
    kube.core_v1.create_namespace({"metadata": {"name": namespace, "labels": {"soundmind.ai/test": "true"}}})
    op.create_volumes(kube, namespace, ("models",))
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SERVING.kind,
        "metadata": {"name": SERVING_NAME},
        "spec": {
            "model": "Qwen/Qwen2.5-Omni-7B",
            "servedModelName": SERVED_MODEL_NAME,
            "image": IMAGE,
            "resources": {"cpu": "1", "memory": "1Gi"},
            "vllm": {"maxModelLen": 16384, "extraArgs": [f"--max-num-seqs={MAX_NUM_SEQS}"]},
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 4,
                "metric": "num_requests_waiting",
                "target": TARGET,
                "scaleUpStabilizationSeconds": 0,
                "scaleDownStabilizationSeconds": WINDOW,
            },
        },
    }
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, SERVING.plural, manifest)
    fleet = StandinFleet(kube, namespace, SERVING_NAME, loop, workdir / "standins", Simulation(answers=data[0]))
    fleet.start()
    rig = Rig(kube, namespace, SERVING_NAME, loop, fleet, say=say)
    try:
        yield rig
    finally:
        if rig.load:
            rig.load.stop()
        kube.custom_objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, SERVING.plural, SERVING_NAME)
        fleet.stop()
        kube.core_v1.delete_namespace(namespace)
        kube.core_v1.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        op.delete_volumes(kube, namespace)


def _during(timeline: list[Sample], start: float, end: float = math.inf) -> list[Sample]:
    return [s for s in timeline if start <= s.t <= end]


def test_keda_scales_the_serving_with_vllms_queue_summed_over_its_pods(rig: Rig, data, say):
    query = rig.query()
    say(f"KEDA's query: {query}  (target {TARGET} per replica, {MAX_NUM_SEQS} slots per replica)")
    assert query.startswith("sum(vllm:num_requests_waiting{") and f'namespace="{rig.namespace}"' in query
    rig.watch(lambda s: s.ready == 1 and s.scraped == 1 and s.desired == 1, timeout=90, what="1 replica, scraped")

    # -- up: more load than one replica's capacity ------------------------------------------------
    rig.start_load(data[1], clients=SCALE_UP_CLIENTS, max_requests=MAX_REQUESTS, deadline_seconds=LOAD_DEADLINE_SECONDS)
    load_began = rig.sample().t
    up = rig.watch(
        lambda s: s.ready == 3 and s.scraped == 3 and s.waiting == 0,
        timeout=120,
        what="3 replicas serve, queue drained",
    )
    scaling = _during(rig.timeline, load_began, up.t)
    first_up = next(s for s in scaling if (s.desired or 0) > 1)
    asked = max(s.desired or 0 for s in scaling)
    seen = [s.waiting for s in _during(rig.timeline, first_up.t - 4, first_up.t) if s.waiting is not None]
    expected = math.ceil(max(seen) / TARGET)
    say(
        f"HPA asked for {asked} replicas; waiting before it decided {seen} -> ceil({max(seen):g}/{TARGET}) = {expected}"
    )
    assert asked == 3, f"the HPA asked for {asked} replicas, not ceil(8 / {TARGET}) = 3"
    assert abs(asked - expected) <= 1
    serving = rig.serving_object()
    assert serving["status"]["replicas"] == 3 and serving["status"]["readyReplicas"] == 3
    active = next(c for c in serving["status"]["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "True" and active["reason"] == "KEDA", active
    assert all(s.scaling_active == "True" for s in scaling), "ScalingActive went False under load"
    assert sorted(rig.fleet.pods()) == sorted(
        p.metadata.name for p in rig.kube.core_v1.list_namespaced_pod(rig.namespace).items
    )

    # -- on target: 3 replicas each with TARGET waiting; a summed query holds steady ---------------
    rig.load.set_clients(ON_TARGET_CLIENTS)
    on_target = rig.watch(lambda s: (s.waiting or 0) >= 3 * TARGET - 1, timeout=30, what="3 waiting on each replica")
    # Prometheus holds one series per pod; the query sums them into the one KEDA serves to the HPA
    # (a per-pod query, as other charts ship, KEDA refuses: "returned multiple elements").
    per_pod = query.removeprefix("sum(").removesuffix(")")
    assert len(rig.prometheus.query(per_pod)) == 3

    def served() -> float | None:
        items = external_metric(rig)["items"]
        assert len(items) == 1, items
        value = parse_quantity(items[0]["value"])
        return value if abs(value - 3 * TARGET) <= 1 else None

    value = wait_for(served, timeout=15, what=f"KEDA serving the HPA the sum, {3 * TARGET}")
    say(f"KEDA serves the HPA one value, {value:g}: the 3 pods' series summed")
    hold = WINDOW + 3 * HPA_SYNC_PERIOD_SECONDS + 2
    rig.watch(lambda s: s.t >= on_target.t + hold, timeout=hold + 15, what=f"held {hold}s, longer than the window")
    steady = _during(rig.timeline, on_target.t)
    assert all(s.desired == 3 and s.replicas == 3 for s in steady), "the HPA did not hold 3 replicas on target"
    per_replica = sorted(s.hpa_metric for s in steady if s.hpa_metric is not None)
    median = per_replica[len(per_replica) // 2]
    say(f"on target: the HPA saw {median:g} waiting per replica (target {TARGET}) and held 3 replicas")
    assert abs(median - TARGET) <= 0.1 * TARGET + 0.35, per_replica

    # -- down: the load stops; back to minReplicas after the stabilization window ------------------
    stopped = time.monotonic() - rig.began
    rig.load.stop()
    down = rig.watch(lambda s: s.replicas == 1 and s.standins == 1, timeout=WINDOW + 60, what="back to 1 replica")
    first_drop = next(s for s in _during(rig.timeline, stopped) if (s.desired or 3) < 3)
    say(f"scale-down began {first_drop.t - stopped:.1f}s after the load stopped (window {WINDOW}s)")
    assert first_drop.t - stopped >= WINDOW - 2, "scaled down before the stabilization window passed"
    rig.watch(lambda s: s.scraped == 1 and s.waiting == 0 and s.ready == 1, timeout=30, what="1 replica, scraped")
    assert rig.load.failed == 0, f"requests failed: {dict(rig.load.errors)}"
    say(f"load: {rig.load.answered} requests answered, none failed; {rig.fleet.started} stand-ins started in all")
    assert down.replicas == 1


def external_metric(rig: Rig) -> dict:
    """The external metric KEDA serves for the serving's ScaledObject, read as the HPA reads it."""
    return rig.kube.custom_objects.list_namespaced_custom_object(
        "external.metrics.k8s.io",
        "v1beta1",
        rig.namespace,
        "s0-prometheus",
        label_selector=f"scaledobject.keda.sh/name={SERVING_NAME}",
    )


def test_soundmind_eval_against_the_served_model_reports_accuracy_and_latency(rig: Rig, data, tmp_path: Path, say):
    rig.watch(lambda s: s.ready >= 1 and s.standins >= 1, timeout=60, what="a replica serving")
    endpoint = rig.fleet.endpoints()[0]
    parquet = data[0]
    report_path = tmp_path / "report.json"
    argv = ["eval", "--endpoint", endpoint, "--model", SERVED_MODEL_NAME, "--data", str(parquet)]
    assert soundmind([*argv, "--report", str(report_path), "--concurrency", "2"]) == 0
    report = json.loads(report_path.read_text())
    assert report["complete"] and report["requests"]["answered"] == 8
    assert report["accuracy"] == 1.0 and report["format_rate"] == 1.0  # the stand-ins answer right (accuracy 1.0)
    assert report["latency_s"]["p50"] > 0
    say(
        f"soundmind eval via {endpoint}: {report['requests']['answered']} answered, accuracy {report['accuracy']:.2f}, "
        f"latency p50 {report['latency_s']['p50']:.2f}s p95 {report['latency_s']['p95']:.2f}s"
    )
    # The model name clients send is the serving's servedModelName, and nothing else.
    wrong = tmp_path / "wrong.json"
    argv = ["eval", "--endpoint", endpoint, "--model", "Qwen/Qwen2.5-Omni-7B", "--data", str(parquet)]
    assert soundmind([*argv, "--report", str(wrong), "--retries", "0"]) == 1
    assert json.loads(wrong.read_text())["requests"]["errors"] == {"HTTP 404": 8}
