"""The autoscaling loop around one SoundMindServing, all real but the model and the pods' containers.

KEDA (operator + metrics adapter), Prometheus, the operator (told where Prometheus is), the HPA
controller and the scheduler are the real programs; kwok marks the pods Ready and
:class:`tests.support.standins.StandinFleet` runs a vLLM stand-in per Ready pod. :class:`Rig`
holds them together and reads the loop's state into a timeline (:class:`Sample`): the queue as the
ScaledObject's own query sees it in Prometheus, what the HPA decided, and the serving's status.

Used by tests/integration/test_autoscaling.py and by `make demo`
(``python -m tests.support.autoscaling demo``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kubernetes import client

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.eval.requests import chat_request, read_items
from soundmind_operator.serving import names
from tests.support import keda as keda_support
from tests.support import operator as op
from tests.support.kube import Kube, read_or_none
from tests.support.load import LoadGenerator
from tests.support.pki import CertPair
from tests.support.poll import wait_for
from tests.support.prometheus import SCRAPE_JOB, Prometheus
from tests.support.standins import Simulation, StandinFleet

ROOT = Path(__file__).resolve().parents[2]


def parse_quantity(text: str | None) -> float | None:
    """A Kubernetes quantity as the HPA status writes metric values: "3", "2667m", "1500k"."""
    if text is None:
        return None
    scale = {"m": 1e-3, "u": 1e-6, "n": 1e-9, "k": 1e3, "M": 1e6}
    return float(text[:-1]) * scale[text[-1]] if text[-1] in scale else float(text)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the rig started watching
    waiting: float | None  # the ScaledObject's query, in Prometheus: sum of vllm:num_requests_waiting
    running: float | None
    hpa_metric: float | None  # the HPA's view: the metric per current replica (AverageValue)
    desired: int | None  # the HPA's desiredReplicas
    replicas: int  # the serving's status.replicas
    ready: int  # the serving's status.readyReplicas
    scaling_active: str  # the serving's ScalingActive condition status
    standins: int  # stand-in processes serving (one per Ready pod)
    scraped: int  # stand-ins Prometheus scrapes successfully (up == 1)
    clients: int
    answered: int

    HEADER = (
        "     t  waiting  running  hpa-metric  desired  replicas  ready  active  stand-ins  scraped  clients  answered"
    )

    def row(self) -> str:
        def number(value, pattern):
            width = int(pattern.split(".")[0].rstrip("df"))
            return "-".rjust(width) if value is None else format(value, pattern)

        return (
            f"{self.t:6.1f}  {number(self.waiting, '7.0f')}  {number(self.running, '7.0f')}  "
            f"{number(self.hpa_metric, '10.2f')}  {number(self.desired, '7d')}  {self.replicas:8d}  {self.ready:5d}  "
            f"{self.scaling_active:>6}  {self.standins:9d}  {self.scraped:7d}  {self.clients:7d}  {self.answered:8d}"
        )


@dataclass
class Rig:
    kube: Kube
    namespace: str
    serving: str
    prometheus: Prometheus
    fleet: StandinFleet
    say: Callable[[str], None] = print
    load: LoadGenerator | None = None
    began: float = field(default_factory=time.monotonic)
    timeline: list[Sample] = field(default_factory=list)

    @property
    def hpa_name(self) -> str:
        return f"keda-hpa-{names.autoscaler(self.serving)}"

    def scaled_object(self) -> dict | None:
        return read_or_none(
            lambda: self.kube.custom_objects.get_namespaced_custom_object(
                "keda.sh", "v1alpha1", self.namespace, "scaledobjects", names.autoscaler(self.serving)
            )
        )

    def query(self) -> str:
        """The query KEDA runs for this serving, read from its ScaledObject."""
        scaled = wait_for(self.scaled_object, timeout=60, what=f"ScaledObject {self.namespace}/{self.serving}")
        return scaled["spec"]["triggers"][0]["metadata"]["query"]

    def hpa(self):
        return read_or_none(
            lambda: client.AutoscalingV2Api(self.kube.api_client).read_namespaced_horizontal_pod_autoscaler(
                self.hpa_name, self.namespace
            )
        )

    def serving_object(self) -> dict:
        return self.kube.custom_objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SERVING.plural, self.serving
        )

    def sample(self) -> Sample:
        self.fleet.check()
        waiting_query = self.query()
        hpa = self.hpa()
        metric = None
        if hpa and hpa.status and hpa.status.current_metrics:
            current = hpa.status.current_metrics[0].external.current
            metric = parse_quantity(current.average_value)
        status = self.serving_object().get("status") or {}
        active = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "ScalingActive"), "-")
        scraped = self.prometheus.value(
            f'count(up{{job="{SCRAPE_JOB}",namespace="{self.namespace}",'
            f'app_kubernetes_io_instance="{self.serving}"}} == 1)'
        )
        sample = Sample(
            t=time.monotonic() - self.began,
            waiting=self.prometheus.value(waiting_query),
            running=self.prometheus.value(
                waiting_query.replace("vllm:num_requests_waiting", "vllm:num_requests_running")
            ),
            hpa_metric=metric,
            desired=hpa.status.desired_replicas if hpa and hpa.status else None,
            replicas=status.get("replicas", 0),
            ready=status.get("readyReplicas", 0),
            scaling_active=active,
            standins=len(self.fleet.pods()),
            scraped=int(scraped or 0),
            clients=self.load.clients if self.load else 0,
            answered=self.load.answered if self.load else 0,
        )
        if not self.timeline:
            self.say(Sample.HEADER)
        self.timeline.append(sample)
        self.say(sample.row())
        return sample

    def watch(self, until: Callable[[Sample], bool], *, timeout: float, what: str) -> Sample:
        """Sample once a second until ``until(sample)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            started = time.monotonic()
            sample = self.sample()
            if until(sample):
                self.say(f"  -> {what} (t={sample.t:.1f}s)")
                return sample
            if started > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last sample:\n{sample.row()}")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    def start_load(self, bodies: list[bytes], *, clients: int, max_requests: int, deadline_seconds: float) -> None:
        self.load = LoadGenerator(
            self.fleet.endpoints, bodies, max_requests=max_requests, deadline_seconds=deadline_seconds
        )
        self.load.set_clients(clients)


def prepared_requests(
    workdir: Path, served_model_name: str, rows: int = 8, max_tokens: int = 256
) -> tuple[Path, list[bytes]]:
    """ALR rows spoken by `soundmind data synth`, prepared by `soundmind data prepare` (audio inline),
    and each one's chat request body as `soundmind eval` sends it."""
    from soundmind.cli import main

    if main(["data", "synth", "--out", str(workdir / "alr"), "--limit", str(rows)]) != 0:
        raise AssertionError("soundmind data synth failed")
    argv = ["data", "prepare", "--data-dir", str(workdir / "alr"), "--out", str(workdir / "prepared")]
    if main([*argv, "--modality", "audio-text", "--audio-ref", "bytes"]) != 0:
        raise AssertionError("soundmind data prepare failed")
    parquet = next((workdir / "prepared").glob("*.parquet"))
    bodies = [json.dumps(chat_request(item, served_model_name, max_tokens)).encode() for item in read_items(parquet)]
    return parquet, bodies


@contextmanager
def loop_components(
    kube: Kube, bin_dir: Path, pki_dir: Path, workdir: Path, say: Callable[[str], None] = print
) -> Iterator[tuple[Prometheus, op.OperatorProcess]]:
    """KEDA, Prometheus and the operator (as its ServiceAccount, told where Prometheus is), started in
    that order (the operator looks for KEDA's CRDs once, at start-up); stopped in reverse, with
    KEDA's APIService unregistered before its adapter stops, every ScaledObject finalized while KEDA
    runs, and its CRDs removed last."""
    with ExitStack() as stack:
        began = time.monotonic()
        stack.callback(keda_support.uninstall_crds, kube)
        keda = keda_support.Keda.start(
            kube,
            bin_dir,
            CertPair(pki_dir / "ca.crt", pki_dir / "ca.key"),
            CertPair(pki_dir / "admin.crt", pki_dir / "admin.key"),
            workdir / "keda",
        )
        stack.callback(keda.stop)
        stack.callback(keda_support.delete_scaled_objects, kube)  # before KEDA stops (its finalizers)
        say(
            f"KEDA operator and metrics adapter serving, APIService {keda_support.API_SERVICE} Available "
            f"({time.monotonic() - began:.1f}s)"
        )
        prometheus = Prometheus(workdir / "prometheus").start()
        stack.callback(prometheus.stop)
        say(f"Prometheus at {prometheus.url}, scraping every second")
        op.install_crds(kube)
        op.install_rbac(kube)
        kubeconfig = wait_for(
            lambda: read_or_none(lambda: op.service_account_kubeconfig(kube, workdir / "operator.kubeconfig")),
            timeout=30,
            what="a token for the operator's ServiceAccount",
        )
        operator = op.OperatorProcess(
            kubeconfig, workdir / "operator.log", resync_seconds=1.0, prometheus_url=prometheus.url
        ).start()
        stack.callback(operator.stop)
        say(f"soundmind-operator running, --prometheus-url={prometheus.url}")
        yield prometheus, operator


# -- make demo ------------------------------------------------------------------------------------
DEMO_AUTOSCALING = {"minReplicas": 1, "maxReplicas": 4, "target": 3, "scaleDownStabilizationSeconds": 15}


def demo(kubeconfig: Path, bin_dir: Path, example: Path) -> int:
    kube = Kube.connect(kubeconfig, kubectl=bin_dir / "kubectl")
    namespace = f"autoscaling-demo-{os.urandom(2).hex()}"  # an earlier demo's may still be terminating
    workdir = Path(tempfile.mkdtemp(prefix="soundmind-autoscaling-demo-"))
    manifest = yaml.safe_load(example.read_text())
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    spec["autoscaling"] = {**spec.get("autoscaling", {}), **DEMO_AUTOSCALING}
    spec["vllm"] = {**spec.get("vllm", {}), "extraArgs": ["--max-num-seqs=4"]}
    print(f"{example.name}, with autoscaling {DEMO_AUTOSCALING} and --max-num-seqs=4 (files: {workdir})")
    with ExitStack() as stack:
        prometheus, _ = stack.enter_context(loop_components(kube, bin_dir, kubeconfig.parent / "pki", workdir))
        kube.core_v1.create_namespace({"metadata": {"name": namespace}})
        stack.callback(kube.core_v1.delete_namespace, namespace)
        op.create_volumes(kube, namespace, ("models",))
        stack.callback(op.delete_volumes, kube, namespace)
        parquet, bodies = prepared_requests(workdir / "data", spec.get("servedModelName", "soundmind"))
        kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, SERVING.plural, manifest)
        stack.callback(
            kube.custom_objects.delete_namespaced_custom_object, GROUP, VERSION, namespace, SERVING.plural, name
        )
        fleet = StandinFleet(kube, namespace, name, prometheus, workdir / "standins", Simulation(answers=parquet))
        stack.callback(fleet.stop)
        fleet.start()
        rig = Rig(kube, namespace, name, prometheus, fleet)
        print(f"KEDA's query: {rig.query()}")
        rig.watch(lambda s: s.ready == 1 and s.scraped == 1, timeout=90, what="1 replica ready and scraped")
        print("\n12 clients, one request in flight each: more than one replica's 4 slots")
        rig.start_load(bodies, clients=12, max_requests=2000, deadline_seconds=240)
        stack.callback(rig.load.stop)
        rig.watch(
            lambda s: s.ready >= 3 and s.scraped >= 3 and s.waiting == 0, timeout=120, what="scaled up, queue drained"
        )
        print_panel(prometheus, namespace, name, "Requests running and waiting")
        print("\nThe load stops")
        rig.load.stop()
        rig.watch(lambda s: s.replicas == 1, timeout=120, what="back to minReplicas after the stabilization window")
    print("\nSimulated: the pods' containers (kwok) and the model (a stand-in answering as vLLM would, with vLLM's")
    print("metrics). Real: KEDA, the HPA controller, Prometheus, the scheduler, the API server and the operator.")
    return 0


def print_panel(prometheus: Prometheus, namespace: str, serving: str, title: str, seconds: int = 40) -> None:
    """A Serving dashboard panel's queries (the chart's committed JSON) over the last ``seconds``, as
    a table: what Grafana would plot, in numbers."""
    dashboard = json.loads((ROOT / "charts" / "soundmind-operator" / "dashboards" / "serving.json").read_text())
    panel = next(p for p in dashboard["panels"] if p.get("title") == title)
    end = time.time()
    columns: list[tuple[str, dict[float, str]]] = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$namespace", namespace).replace("$serving", serving)
        query = {"query": expr, "start": end - seconds, "end": end, "step": 2}
        url = f"{prometheus.url}/api/v1/query_range?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            result = json.loads(response.read())["data"]["result"]
        metric = expr.split("(")[2].split("{")[0] if expr.count("(") >= 2 else expr
        values = {float(t): v for t, v in result[0]["values"]} if result else {}
        columns.append((metric.removeprefix("vllm:"), values))
    print(f"\nServing dashboard, panel {title!r}, as Prometheus answers its queries (sum over the pods):")
    print(f"  {'seconds ago':>11}" + "".join(f"  {name:>18}" for name, _ in columns))
    for t in sorted({t for _, values in columns for t in values}):
        row = "".join(f"  {float(values[t]):>18g}" if t in values else f"  {'-':>18}" for _, values in columns)
        print(f"  {max(end - t, 0):>11.0f}{row}")
    print(f"  query: {panel['targets'][0]['expr']}")


def main(argv: list[str] | None = None) -> int:
    from tests.support.localcluster import default_bin_dir

    parser = argparse.ArgumentParser(prog="python -m tests.support.autoscaling", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("demo", help="scale the example serving up under load and back down")
    run.add_argument("--kubeconfig", type=Path, required=True, help="the local cluster's admin kubeconfig")
    run.add_argument("--bin-dir", type=Path, default=default_bin_dir())
    run.add_argument("--example", type=Path, default=ROOT / "examples" / "serving.yaml")
    args = parser.parse_args(argv)
    return demo(args.kubeconfig, args.bin_dir, args.example)


if __name__ == "__main__":
    sys.exit(main())
