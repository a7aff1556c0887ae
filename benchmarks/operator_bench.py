"""The operator against the API server's own floor: a burst of objects, then the cost of standing still.

On a fresh local control plane (kwok GPU nodes, the operator running as its ServiceAccount with its
production resync of 15 s), in one run:

1. Floor: a plain client creates what the operator makes for a one-node training (ConfigMap,
   ServiceAccount, Role, RoleBinding, Service, Job) for N names, with the same concurrency.
2. Burst: N `SoundMindTraining` objects created at once; per object, the time from its creation
   until its Job exists and `status.phase` is set (both seen through watches). Then the same for M
   `SoundMindServing` objects (Deployment, Service, PDB and HPA; floor: those four).
3. Steady state: with `--finished` more trainings present that have already finished (created,
   and marked Succeeded, before the operator starts), so that the operator holds trainings +
   servings + finished objects (1,000 by default), nothing changes for `--idle-seconds`: the
   operator's own API requests (its `soundmind_operator_api_requests_total`), the API server's
   `apiserver_request_total` GET+LIST (everyone's), the operator's CPU, RSS and peak RSS. With
   `--growth-seconds`, RSS is sampled again after that much more steady state (the issue asks for
   10 minutes: `--growth-seconds 600`).
4. Reaction: with every object still present, the running trainings' drivers exit; the time until
   each training says Succeeded.

    $(hack/venv.sh)/bin/python benchmarks/operator_bench.py [--trainings 200] [--servings 100] \
        [--finished 700] [--idle-seconds 60] [--growth-seconds 0]

`make bench` runs it with its defaults, then the reward benchmark.

Figures are ratios measured in the same run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, watch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from soundmind.api.base import GROUP, VERSION  # noqa: E402
from soundmind.api.serving import SERVING, ServingSpec  # noqa: E402
from soundmind.api.training import TRAINING, TrainingSpec  # noqa: E402
from soundmind_operator.serving import builders as serving_builders  # noqa: E402
from soundmind_operator.training import builders as training_builders  # noqa: E402
from tests.support import operator as op  # noqa: E402
from tests.support import sim  # noqa: E402
from tests.support.kube import Kube  # noqa: E402
from tests.support.localcluster import LocalCluster, default_bin_dir  # noqa: E402

IMAGE = "registry.invalid/soundmind:bench"
THREADS = 16
# One GPU each, so 16 of them run on the two simulated 8-GPU nodes and the rest stay Pending.
TRAINING_SPEC = {"image": IMAGE, "resources": {"gpusPerNode": 1, "cpu": "1", "memory": "1Gi"}}
SERVING_SPEC = {
    "image": IMAGE,
    "model": "Qwen/Qwen2.5-Omni-7B",
    "resources": {"cpu": "1", "memory": "1Gi"},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(label: str, latencies: list[float], wall: float) -> dict:
    row = {
        "label": label,
        "n": len(latencies),
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "per_second": len(latencies) / wall,
    }
    print(f"  {label:<34} n={row['n']:<4} p50 {row['p50']:6.2f}s  p99 {row['p99']:6.2f}s  {row['per_second']:6.1f}/s")
    return row


def in_parallel(work: Callable[[int], None], count: int) -> float:
    began = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(work, range(count)))
    return time.monotonic() - began


# -- floors ----------------------------------------------------------------------------------


def floor(kube: Kube, namespace: str, count: int, children: Callable[[str], list[dict]]) -> dict:
    """A plain client creating `children(name)` for `count` names: per-name latency and throughput."""
    latencies: list[float] = []

    def create(index: int) -> None:
        name = f"floor-{index}"
        began = time.monotonic()
        for child in children(name):
            create_object(kube, namespace, child)
        latencies.append(time.monotonic() - began)

    wall = in_parallel(create, count)
    return {"latencies": latencies, "wall": wall}


def create_object(kube: Kube, namespace: str, manifest: dict) -> None:
    kind = manifest["kind"]
    api = {
        "ConfigMap": kube.core_v1.create_namespaced_config_map,
        "ServiceAccount": kube.core_v1.create_namespaced_service_account,
        "Service": kube.core_v1.create_namespaced_service,
        "Role": kube.rbac_v1.create_namespaced_role,
        "RoleBinding": kube.rbac_v1.create_namespaced_role_binding,
        "Job": kube.batch_v1.create_namespaced_job,
        "Deployment": kube.apps_v1.create_namespaced_deployment,
        "PodDisruptionBudget": client.PolicyV1Api(kube.api_client).create_namespaced_pod_disruption_budget,
        "HorizontalPodAutoscaler": client.AutoscalingV2Api(kube.api_client).create_namespaced_horizontal_pod_autoscaler,
    }[kind]
    api(namespace, manifest)


def training_children(name: str) -> list[dict]:
    spec = TrainingSpec.model_validate(TRAINING_SPEC)
    return [*training_builders.build_children(name, spec), training_builders.build_job(name, "floor", spec, 1)]


def serving_children(name: str) -> list[dict]:
    spec = ServingSpec.model_validate(SERVING_SPEC)
    model = serving_builders.ModelSource(spec.model)
    return serving_builders.build_children(name, "floor", spec, model, serving_builders.Platform())


# -- bursts ----------------------------------------------------------------------------------


class Seen:
    """First time each object's condition was seen through a watch."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.lock = threading.Lock()

    def mark(self, name: str) -> None:
        with self.lock:
            self.times.setdefault(name, time.monotonic())


def watch_in_background(list_call: Callable, seen: Seen, key: Callable[[dict], str | None], stop: threading.Event):
    """Events of `list_call` (a lambda: the watch yields plain dicts) marked in `seen` by `key`."""

    def run() -> None:
        while not stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(list_call, timeout_seconds=5, _request_timeout=10):
                    name = key(event["object"])
                    if name:
                        seen.mark(name)
                    if stop.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - a broken watch restarts
                print(f"  (watch restarted: {type(error).__name__}: {error})", file=sys.stderr)
                time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def burst(kube: Kube, namespace: str, kind, count: int, spec: dict, child_list: Callable, child_key) -> dict:
    """Create `count` objects of `kind`; per object, the time until its child exists and it has a phase."""
    created: dict[str, float] = {}
    phased, child_seen = Seen(), Seen()
    stop = threading.Event()

    def phase_key(obj: dict) -> str | None:
        return obj["metadata"]["name"] if (obj.get("status") or {}).get("phase") else None

    watchers = [
        watch_in_background(
            lambda **kw: kube.custom_objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, **kw
            ),
            phased,
            phase_key,
            stop,
        ),
        watch_in_background(lambda **kw: child_list(namespace, **kw), child_seen, child_key, stop),
    ]
    time.sleep(1)  # the watches are open

    def create(index: int) -> None:
        name = f"b-{index}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
        created[name] = time.monotonic()
        kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, body)

    began = time.monotonic()
    in_parallel(create, count)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (len(phased.times) < count or len(child_seen.times) < count):
        time.sleep(0.2)
    wall = time.monotonic() - began
    stop.set()
    done = [n for n in created if n in phased.times and n in child_seen.times]
    if len(done) < count:
        print(f"  !! only {len(done)}/{count} {kind.kind}s got their child and a phase within 300 s")
    latencies = [max(phased.times[n], child_seen.times[n]) - created[n] for n in done]
    for watcher in watchers:
        watcher.join(timeout=15)
    return {"latencies": latencies, "wall": wall}


def adopted(kube: Kube, namespace: str, count: int) -> float:
    """Seconds until the operator has put its finalizer on `count` trainings of `namespace` (its
    first pass over objects that existed before it started), so the burst measures the burst."""
    began = time.monotonic()
    while time.monotonic() - began < 600:
        items = kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, TRAINING.plural)["items"]
        if sum(1 for i in items if f"{GROUP}/finalizer" in (i["metadata"].get("finalizers") or [])) >= count:
            break
        time.sleep(1)
    time.sleep(5)  # their last writes' watch events
    return time.monotonic() - began


# -- steady state ----------------------------------------------------------------------------


def operator_counters(operator: op.OperatorProcess) -> tuple[float, float]:
    requests = passes = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("soundmind_operator_api_requests_total{"):
            requests += float(line.rsplit(" ", 1)[1])
        elif line.startswith("soundmind_operator_reconcile_total{"):
            passes += float(line.rsplit(" ", 1)[1])
    return requests, passes


def apiserver_reads(kube: Kube) -> float:
    """GET and LIST requests the API server has served (everyone's), from its own metrics."""
    _, body = kube.request("GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("apiserver_request_total{") and ('verb="GET"' in line or 'verb="LIST"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def seed_finished(kube: Kube, namespace: str, count: int) -> float:
    """`count` trainings that have finished (status Succeeded), written before the operator runs so
    that it never made their children: what a cluster's history of trainings costs it."""

    def create(index: int) -> None:
        name = f"done-{index}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": TRAINING.kind, "metadata": {"name": name}}
        kube.custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAINING.plural, {**body, "spec": TRAINING_SPEC}
        )
        status = {"phase": "Succeeded", "attempt": 1, "jobName": f"{name}-a1", "gpuSeconds": 3600.0}
        kube.custom_objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, TRAINING.plural, name, {"status": status}
        )

    return in_parallel(create, count)


def quiet(operator: op.OperatorProcess, seconds: float = 10, limit: float = 60) -> float:
    """Seconds until the operator has made no API request for `seconds` (the bursts' tails), at
    most `limit`: running trainings write their GPU-seconds every resync."""
    began = last_change = time.monotonic()
    last = operator_counters(operator)[0]
    while time.monotonic() - last_change < seconds and time.monotonic() - began < limit:
        time.sleep(1)
        now = operator_counters(operator)[0]
        if now != last:
            last, last_change = now, time.monotonic()
    return time.monotonic() - began


def steady_state(kube: Kube, operator: op.OperatorProcess, seconds: float) -> dict:
    print(f"  (quiet after {quiet(operator):.0f}s: no operator request for 10 s)")
    pid = operator.process.pid
    requests0, passes0 = operator_counters(operator)
    reads0, cpu0 = apiserver_reads(kube), process_cpu_seconds(pid)
    time.sleep(seconds)
    requests1, passes1 = operator_counters(operator)
    reads1, cpu1 = apiserver_reads(kube), process_cpu_seconds(pid)
    minutes = seconds / 60
    row = {
        "operator_requests_per_min": (requests1 - requests0) / minutes,
        "operator_passes_per_min": (passes1 - passes0) / minutes,
        "apiserver_reads_per_min": (reads1 - reads0) / minutes,
        "cpu_percent": 100 * (cpu1 - cpu0) / seconds,
        "rss_mb": rss_mb(pid),
        "peak_rss_mb": rss_mb(pid, "VmHWM"),
    }
    print(
        f"  operator: {row['operator_requests_per_min']:.0f} API requests/min, {row['operator_passes_per_min']:.0f} "
        f"passes/min, {row['cpu_percent']:.1f}% of a core, RSS {row['rss_mb']:.0f} MB (peak "
        f"{row['peak_rss_mb']:.0f} MB); API server (everyone): {row['apiserver_reads_per_min']:.0f} GET+LIST/min"
    )
    return row


def rss_growth(operator: op.OperatorProcess, seconds: float) -> None:
    pid = operator.process.pid
    before = rss_mb(pid)
    time.sleep(seconds)
    after = rss_mb(pid)
    print(
        f"  RSS {before:.0f} MB -> {after:.0f} MB after {seconds:.0f} s more: {100 * (after - before) / before:+.1f}%"
    )


# -- reaction --------------------------------------------------------------------------------


def reaction(kube: Kube, namespace: str) -> list[float]:
    """End every running training driver; the time until each training shows Succeeded."""
    pods = [
        p
        for p in kube.core_v1.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/component=trainer").items
        if p.status.phase == "Running"
    ]
    ended: dict[str, float] = {}
    for pod in pods:
        training = pod.metadata.labels["app.kubernetes.io/instance"]
        ended[training] = time.monotonic()
        kube.core_v1.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {sim.EXIT_CODE: "0"}}}
        )
    done: dict[str, float] = {}
    job_done: dict[str, float] = {}  # the floor: the Job controller's verdict (it batches pod updates for 1 s)
    deadline = time.monotonic() + 60
    while len(done) < len(ended) and time.monotonic() < deadline:
        for job in kube.batch_v1.list_namespaced_job(
            namespace, label_selector="app.kubernetes.io/component=trainer"
        ).items:
            training = (job.metadata.labels or {}).get("app.kubernetes.io/instance")
            verdicts = [c for c in job.status.conditions or [] if c.type in ("SuccessCriteriaMet", "Complete")]
            if training in ended and training not in job_done and any(c.status == "True" for c in verdicts):
                job_done[training] = time.monotonic()
        for training in kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, TRAINING.plural)[
            "items"
        ]:
            name = training["metadata"]["name"]
            if name in ended and name not in done and (training.get("status") or {}).get("phase") == "Succeeded":
                done[name] = time.monotonic()
        time.sleep(0.05)
    floor_ = [job_done[n] - ended[n] for n in job_done]
    if floor_:
        print(
            f"  pod ended -> Job's verdict (floor): n={len(floor_)} p50 {percentile(floor_, 0.5):.2f}s "
            f"p99 {percentile(floor_, 0.99):.2f}s"
        )
    return [done[n] - ended[n] for n in done]


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainings", type=int, default=200)
    parser.add_argument("--servings", type=int, default=100)
    parser.add_argument("--finished", type=int, default=700, help="finished trainings present besides the bursts")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--growth-seconds", type=float, default=0, help="more steady state, then RSS again")
    parser.add_argument("--resync-seconds", type=float, default=15.0, help="the operator's (production default)")
    args = parser.parse_args(argv)

    cluster = LocalCluster.start(default_bin_dir(), real_node=False)  # the operator's pods are all simulated
    workdir = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    operator = None
    try:
        kube = Kube.connect(cluster.kubeconfig, kubectl=default_bin_dir() / "kubectl")
        op.install_crds(kube)
        op.install_rbac(kube)
        for namespace in ("floor", "bench", "serve-floor", "serve-bench", "finished"):
            kube.core_v1.create_namespace({"metadata": {"name": namespace}})
            op.create_volumes(kube, namespace)
        time.sleep(2)  # the namespaces' default ServiceAccounts
        if args.finished:
            print(f"seeding {args.finished} finished trainings: {seed_finished(kube, 'finished', args.finished):.0f}s")
        kubeconfig = op.service_account_kubeconfig(kube, workdir / "operator.kubeconfig")
        operator = op.OperatorProcess(kubeconfig, workdir / "operator.log", resync_seconds=args.resync_seconds)
        operator.start()
        if args.finished:
            print(f"operator start-up over them (finalizer on each): {adopted(kube, 'finished', args.finished):.0f}s")
        # The floor runs as the operator's ServiceAccount: the API server's priority and fairness
        # exempts an admin (system:masters) from the limits the operator's requests queue behind.
        as_operator = Kube.connect(kubeconfig)
        print(f"\n{args.trainings} SoundMindTrainings, {THREADS} client threads (log: {operator.log_path})")
        floor_row = summary(
            "floor (6 children, plain client)", **_args(floor(as_operator, "floor", args.trainings, training_children))
        )
        # The floor's Jobs would hold every GPU: the bench's pods could never run (reaction, below).
        kube.batch_v1.delete_collection_namespaced_job("floor", propagation_policy="Background")
        ours = burst(
            kube,
            "bench",
            TRAINING,
            args.trainings,
            TRAINING_SPEC,
            lambda ns, **kw: kube.batch_v1.list_namespaced_job(ns, **kw),
            lambda job: (job["metadata"].get("labels") or {}).get("app.kubernetes.io/instance"),
        )
        burst_row = summary("operator (Job and phase seen)", **_args(ours))
        print(f"  throughput ratio (operator / floor): {burst_row['per_second'] / floor_row['per_second']:.2f}")

        print(f"\n{args.servings} SoundMindServings")
        serving_floor = summary(
            "floor (4 children, plain client)",
            **_args(floor(as_operator, "serve-floor", args.servings, serving_children)),
        )
        served = burst(
            kube,
            "serve-bench",
            SERVING,
            args.servings,
            SERVING_SPEC,
            lambda ns, **kw: kube.apps_v1.list_namespaced_deployment(ns, **kw),
            lambda dep: dep["metadata"]["name"],
        )
        serving_row = summary("operator (Deployment and phase seen)", **_args(served))
        print(f"  throughput ratio (operator / floor): {serving_row['per_second'] / serving_floor['per_second']:.2f}")

        total = args.trainings + args.servings + args.finished
        print(
            f"\nsteady state: {total} objects ({args.finished} trainings finished before the operator started), "
            f"nothing changing, {args.idle_seconds:.0f} s"
        )
        steady_state(kube, operator, args.idle_seconds)
        if args.growth_seconds:
            rss_growth(operator, args.growth_seconds)

        print(f"\nreaction: running drivers exit, {total} objects present")
        latencies = reaction(kube, "bench")
        if latencies:
            print(
                f"  pod ended -> training Succeeded: n={len(latencies)} p50 {percentile(latencies, 0.5):.2f}s "
                f"p99 {percentile(latencies, 0.99):.2f}s (mean {statistics.mean(latencies):.2f}s)"
            )
        return 0
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()


def _args(result: dict) -> dict:
    return {"latencies": result["latencies"], "wall": result["wall"]}


if __name__ == "__main__":
    sys.exit(main())
