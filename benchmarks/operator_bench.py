"""The operator against the API server's own floor: a burst of objects, then the cost of standing still.

On a fresh local control plane (kwok GPU nodes, the operator running as its ServiceAccount with its
production resync of 15 s), in one run:

1. Floor: a plain client creates what the operator makes for a one-node training on this cluster
   (ConfigMap, ServiceAccount, Role, RoleBinding, the attempt's PodGroup where the cluster serves
   PodGroups, as the local cluster does, and the Job) for N names, with the same concurrency;
   also timed from the start of the whole burst, as if all N were asked for at once.
2. Burst: N `SoundMindTraining` objects created at once; per object, the time from its creation
   until its Job exists and `status.phase` is set (both seen through watches). Then the same for M
   `SoundMindServing` objects (Deployment, Service, PDB and HPA; floor: those four).
3. Steady state: with `--finished` more trainings present that have already finished (created,
   and marked Succeeded, before the operator starts), so that the operator holds trainings +
   servings + finished objects (1,000 by default), after `--settle-seconds`, nothing changes for
   `--idle-seconds`: the operator's own API requests (its `soundmind_operator_api_requests_total`),
   its GETs and LISTs as the API server counts them by identity (`tests/support/api_reads.py`: its
   own counter misses kopf's requests), the API server's `apiserver_request_total` GET+LIST
   (everyone's), the operator's CPU, RSS and peak RSS (a figure it cannot read fails the run). With
   `--growth-seconds`, RSS is sampled again after that much more steady state (the issue asks for
   10 minutes: `--growth-seconds 600`).
4. Reaction: with every object still present, the running trainings' drivers exit, and their GPUs
   go to trainings that were Pending. Through watches: a pod's phase turning Running -> its
   training Running (the operator's reaction), and a driver's turning Succeeded -> the training
   Succeeded, next to -> its Job's verdict (the Job controller decides success: that floor).

    $(hack/venv.sh)/bin/python benchmarks/operator_bench.py [--trainings 200] [--servings 100] \
        [--finished 700] [--idle-seconds 60] [--growth-seconds 0]

`make bench` runs it with its defaults, then the reward benchmark.

Figures are ratios measured in the same run: the machine is shared and noisy. At the end, PASS or
FAIL for each of the issue's targets; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import functools
import os
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
from tests.support import api_reads, sim  # noqa: E402
from tests.support import operator as op  # noqa: E402
from tests.support.kube import Kube, serves_pod_groups  # noqa: E402
from tests.support.localcluster import LocalCluster, default_bin_dir  # noqa: E402

IMAGE = "registry.invalid/soundmind:bench"
THREADS = 16
# The targets (2 cores); `Targets` prints PASS or FAIL for each, and the exit status is 1 if
# any failed.
BURST_P99_SECONDS = 5.0
IDLE_CPU_PERCENT = 2.0
PEAK_RSS_MB = 250
RSS_GROWTH_PERCENT = 5.0
REACTION_P99_SECONDS = 1.0
RUNNING_REACTION = "pod Running -> training Running"
# One GPU each, so 16 of them run on the two simulated 8-GPU nodes and the rest stay Pending.
TRAINING_SPEC = {"image": IMAGE, "resources": {"gpusPerNode": 1, "cpu": "1", "memory": "1Gi"}}
SERVING_SPEC = {
    "image": IMAGE,
    "model": "Qwen/Qwen2.5-Omni-7B",
    "resources": {"cpu": "1", "memory": "1Gi"},
    "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
}


class Targets:
    """The issue's targets, each checked as its figure is measured; `report` prints them all."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, bool]] = []

    def check(self, target: str, figure: str, met: bool) -> None:
        self.rows.append((target, figure, met))

    def report(self) -> int:
        """PASS or FAIL per target; 1 if any failed."""
        print("\ntargets")
        for target, figure, met in self.rows:
            print(f"  {'PASS' if met else 'FAIL'}  {target:<46} {figure}")
        return 0 if all(met for _, _, met in self.rows) else 1


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
    """A plain client creating `children(name)` for `count` names: per-name latency and throughput.
    `from_start`: each name's latency counted from the start of the whole burst, as if all `count`
    had been asked for at once (the operator's latencies count from each object's creation, and a
    burst creates them all within a second or two: the client's queue is the operator's)."""
    latencies: list[float] = []
    from_start: list[float] = []
    started = time.monotonic()

    def create(index: int) -> None:
        name = f"floor-{index}"
        began = time.monotonic()
        for child in children(name):
            create_object(kube, namespace, child)
        latencies.append(time.monotonic() - began)
        from_start.append(time.monotonic() - started)

    wall = in_parallel(create, count)
    return {"latencies": latencies, "wall": wall, "from_start": from_start}


def delete_jobs(kube: Kube, namespace: str, limit: float = 300) -> float:
    """Delete the Jobs of `namespace` and wait until they and their pods are gone, so that the
    garbage collector's work does not load the cluster during what is measured next."""
    began = time.monotonic()
    kube.batch_v1.delete_collection_namespaced_job(namespace, propagation_policy="Background")
    while time.monotonic() - began < limit:
        if (
            not kube.batch_v1.list_namespaced_job(namespace).items
            and not kube.core_v1.list_namespaced_pod(namespace).items
        ):
            break
        time.sleep(1)
    return time.monotonic() - began


def create_object(kube: Kube, namespace: str, manifest: dict) -> None:
    kind = manifest["kind"]
    if kind == "PodGroup":
        group, version = manifest["apiVersion"].split("/")
        kube.custom_objects.create_namespaced_custom_object(group, version, namespace, "podgroups", manifest)
        return
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


def training_children(name: str, pod_group: bool) -> list[dict]:
    """What the operator's first pass creates for a one-node training (`pod_group`: the cluster
    serves PodGroups, so each attempt has one)."""
    spec = TrainingSpec.model_validate(TRAINING_SPEC)
    group = [training_builders.build_pod_group(name, spec, 1)] if pod_group else []
    job = training_builders.build_job(name, "floor", spec, 1, pod_group=pod_group)
    return [*training_builders.build_children(name, spec), *group, job]


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


def watch_in_background(list_call: Callable, on_object: Callable[[dict], None], stop: threading.Event):
    """Every object the watch of `list_call` (a lambda: the watch yields plain dicts) delivers, to
    `on_object`, until `stop`."""

    def run() -> None:
        resource_version = None  # a restarted watch resumes: a fresh one would list every object again
        while not stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    list_call, timeout_seconds=5, _request_timeout=10, resource_version=resource_version
                ):
                    resource_version = stream.resource_version
                    on_object(event["object"])
                    if stop.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - a broken watch restarts (from scratch if expired)
                print(f"  (watch restarted: {type(error).__name__}: {error})", file=sys.stderr)
                resource_version = None
                time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def burst(kube: Kube, namespace: str, kind, count: int, spec: dict, child_list: Callable, child_key) -> dict:
    """Create `count` objects of `kind`; per object, the time until its child exists and it has a phase."""
    created: dict[str, float] = {}
    phased, child_seen = Seen(), Seen()
    stop = threading.Event()

    def on_object(obj: dict) -> None:
        if (obj.get("status") or {}).get("phase"):
            phased.mark(obj["metadata"]["name"])

    def on_child(child: dict) -> None:
        if name := child_key(child):
            child_seen.mark(name)

    watchers = [
        watch_in_background(
            lambda **kw: kube.custom_objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, **kw
            ),
            on_object,
            stop,
        ),
        watch_in_background(lambda **kw: child_list(namespace, **kw), on_child, stop),
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
    """The operator's API requests (by its own counter) and its reconcile passes."""
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


def memory_mb(status: str, field: str) -> float:
    """A memory figure of a /proc/<pid>/status text, in MB; ValueError when it has none (a kernel
    thread, a zombie): 0 MB would meet any memory target."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field:
            amount = value.split()
            if len(amount) != 2 or not amount[0].isdigit() or amount[1] != "kB":
                raise ValueError(f"{field} is {value.strip()!r}, not a number of kB")
            return int(amount[0]) / 1024
    raise ValueError(f"no {field} in the process status")


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak so far (VmHWM), in MB."""
    try:
        return memory_mb(Path(f"/proc/{pid}/status").read_text(), field)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"the operator's memory (process {pid}) cannot be read: {error}") from error


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


def steady_state(kube: Kube, operator: op.OperatorProcess, reads_of: str, seconds: float, settle: float) -> dict:
    """`reads_of`: the FlowSchema that counts the operator's reads (`api_reads`)."""
    # The bursts' wake lingers: the servings' pods scheduled make the scheduler retry the Pending
    # trainings' pods, whose changed conditions the operator rightly reports.
    time.sleep(settle)
    print(f"  (after {settle:.0f} s to settle, quiet after {quiet(operator):.0f}s: no operator request for 10 s)")
    pid = operator.process.pid
    requests0, passes0 = operator_counters(operator)
    reads0, operator_reads0, cpu0 = apiserver_reads(kube), api_reads.reads(kube, reads_of), process_cpu_seconds(pid)
    time.sleep(seconds)
    requests1, passes1 = operator_counters(operator)
    reads1, operator_reads1, cpu1 = apiserver_reads(kube), api_reads.reads(kube, reads_of), process_cpu_seconds(pid)
    minutes = seconds / 60
    row = {
        "operator_requests_per_min": (requests1 - requests0) / minutes,
        "operator_reads_per_min": (operator_reads1 - operator_reads0) / minutes,
        "operator_passes_per_min": (passes1 - passes0) / minutes,
        "apiserver_reads_per_min": (reads1 - reads0) / minutes,
        "cpu_percent": 100 * (cpu1 - cpu0) / seconds,
        "rss_mb": rss_mb(pid),
        "peak_rss_mb": rss_mb(pid, "VmHWM"),
    }
    print(
        f"  operator: {row['operator_requests_per_min']:.0f} API requests/min (its counter), "
        f"{row['operator_reads_per_min']:.0f} GET+LIST/min (the API server's, by its identity), "
        f"{row['operator_passes_per_min']:.0f} "
        f"passes/min, {row['cpu_percent']:.1f}% of a core, RSS {row['rss_mb']:.0f} MB (peak "
        f"{row['peak_rss_mb']:.0f} MB); API server (everyone): {row['apiserver_reads_per_min']:.0f} GET+LIST/min"
    )
    return row


def rss_growth(operator: op.OperatorProcess, seconds: float) -> float:
    pid = operator.process.pid
    before = rss_mb(pid)
    time.sleep(seconds)
    after = rss_mb(pid)
    growth = 100 * (after - before) / before
    print(f"  RSS {before:.0f} MB -> {after:.0f} MB after {seconds:.0f} s more: {growth:+.1f}%")
    return growth


# -- reaction --------------------------------------------------------------------------------


class Firsts:
    """When each training first showed something, seen through a watch (this process's clock)."""

    def __init__(self) -> None:
        self.times: dict[tuple[str, str], float] = {}  # (what, training) -> monotonic seconds
        self.lock = threading.Lock()

    def mark(self, what: str, training: str | None) -> None:
        if training:
            with self.lock:
                self.times.setdefault((what, training), time.monotonic())

    def of(self, what: str) -> dict[str, float]:
        with self.lock:
            return {t: at for (w, t), at in self.times.items() if w == what}


def _instance(obj: dict) -> str | None:
    return (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")


def _true(obj: dict, *types: str) -> bool:
    return any(c["type"] in types and c["status"] == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def reaction(kube: Kube, namespace: str) -> dict[str, list[float]]:
    """The running trainings' drivers exit; their GPUs go to trainings that were Pending. Through
    watches, per training: the driver pod's phase turning Succeeded -> the Job's verdict (the Job
    controller decides success; the floor) and -> the training Succeeded; a new pod's phase turning
    Running -> the training Running (the operator's own reaction to a pod's phase change)."""
    firsts, stop = Firsts(), threading.Event()
    selector = "app.kubernetes.io/component=trainer"

    def on_pod(pod: dict) -> None:
        phase = (pod.get("status") or {}).get("phase")
        firsts.mark(f"pod {phase}", _instance(pod))

    def on_job(job: dict) -> None:
        if _true(job, "SuccessCriteriaMet", "Complete"):
            firsts.mark("job done", _instance(job))

    def on_training(training: dict) -> None:
        firsts.mark(f"training {(training.get('status') or {}).get('phase')}", training["metadata"]["name"])

    pods_ = functools.partial(kube.core_v1.list_namespaced_pod, namespace, label_selector=selector)
    jobs = functools.partial(kube.batch_v1.list_namespaced_job, namespace, label_selector=selector)
    trainings = functools.partial(
        kube.custom_objects.list_namespaced_custom_object, GROUP, VERSION, namespace, TRAINING.plural
    )
    watchers = [
        watch_in_background(lambda **kw: pods_(**kw), on_pod, stop),
        watch_in_background(lambda **kw: jobs(**kw), on_job, stop),
        watch_in_background(lambda **kw: trainings(**kw), on_training, stop),
    ]
    time.sleep(3)  # the watches have listed what exists: a later "first" is a change
    with firsts.lock:
        firsts.times.clear()
    pods = kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items
    ended = [p for p in pods if p.status.phase == "Running"]
    for pod in ended:
        kube.core_v1.patch_namespaced_pod(
            pod.metadata.name, namespace, {"metadata": {"annotations": {sim.EXIT_CODE: "0"}}}
        )
    exited = {p.metadata.labels["app.kubernetes.io/instance"] for p in ended}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        started = set(firsts.of("pod Running"))
        if exited <= set(firsts.of("training Succeeded")) and started <= set(firsts.of("training Running")):
            if len(started) >= len(exited):
                break
        time.sleep(0.2)
    stop.set()
    for watcher in watchers:
        watcher.join(timeout=15)

    def gaps(since: str, until: str, among: set[str] | None = None) -> list[float]:
        a, b = firsts.of(since), firsts.of(until)
        return [b[t] - a[t] for t in a if t in b and (among is None or t in among)]

    return {
        "pod Succeeded -> Job's verdict (floor)": gaps("pod Succeeded", "job done", exited),
        "pod Succeeded -> training Succeeded": gaps("pod Succeeded", "training Succeeded", exited),
        RUNNING_REACTION: gaps("pod Running", "training Running"),
    }


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainings", type=int, default=200)
    parser.add_argument("--servings", type=int, default=100)
    parser.add_argument("--finished", type=int, default=700, help="finished trainings present besides the bursts")
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--settle-seconds", type=float, default=60, help="after the bursts, before the idle window")
    parser.add_argument("--growth-seconds", type=float, default=0, help="more steady state, then RSS again")
    parser.add_argument("--resync-seconds", type=float, default=15.0, help="the operator's (production default)")
    args = parser.parse_args(argv)

    targets = Targets()
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
        reads_of = api_reads.count_reads_of(kube, op.OPERATOR_NAMESPACE, op.OPERATOR_SERVICE_ACCOUNT)
        api_reads.wait_counting(kube, Kube.connect(kubeconfig), reads_of)
        operator = op.OperatorProcess(kubeconfig, workdir / "operator.log", resync_seconds=args.resync_seconds)
        operator.start()
        if args.finished:
            print(f"operator start-up over them (finalizer on each): {adopted(kube, 'finished', args.finished):.0f}s")
        # The floor runs as the operator's ServiceAccount: the API server's priority and fairness
        # exempts an admin (system:masters) from the limits the operator's requests queue behind.
        as_operator = Kube.connect(kubeconfig)
        print(f"\n{args.trainings} SoundMindTrainings, {THREADS} client threads (log: {operator.log_path})")
        children = functools.partial(training_children, pod_group=serves_pod_groups(kube))
        floored = floor(as_operator, "floor", args.trainings, children)
        floor_row = summary(f"floor ({len(children('x'))} children, plain client)", **_args(floored))
        summary("floor, timed from the burst's start", floored["from_start"], floored["wall"])
        # The floor's Jobs would hold every GPU: the bench's pods could never run (reaction, below).
        print(f"  (the floor's Jobs and pods deleted: {delete_jobs(kube, 'floor'):.0f}s)")
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
        ratio = burst_row["per_second"] / floor_row["per_second"]
        print(f"  throughput ratio (operator / floor): {ratio:.2f}")
        targets.check("burst, trainings: throughput >= 0.5x the floor", f"{ratio:.2f}x", ratio >= 0.5)
        targets.check(
            f"burst, {args.trainings} trainings: p99 < {BURST_P99_SECONDS:.0f} s",
            f"{burst_row['p99']:.2f} s",
            burst_row["p99"] < BURST_P99_SECONDS,
        )

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
        ratio = serving_row["per_second"] / serving_floor["per_second"]
        print(f"  throughput ratio (operator / floor): {ratio:.2f}")
        targets.check("burst, servings: throughput >= 0.5x the floor", f"{ratio:.2f}x", ratio >= 0.5)

        total = args.trainings + args.servings + args.finished
        print(
            f"\nsteady state: {total} objects ({args.finished} trainings finished before the operator started), "
            f"nothing changing, {args.idle_seconds:.0f} s"
        )
        steady = steady_state(kube, operator, reads_of, args.idle_seconds, args.settle_seconds)
        targets.check(
            "steady: no GET or LIST by the operator (API server)",
            f"{steady['operator_reads_per_min']:.0f}/min",
            steady["operator_reads_per_min"] == 0,
        )
        targets.check(
            f"steady: CPU < {IDLE_CPU_PERCENT:.0f}% of a core",
            f"{steady['cpu_percent']:.1f}%",
            steady["cpu_percent"] < IDLE_CPU_PERCENT,
        )
        targets.check(
            f"peak RSS < {PEAK_RSS_MB} MB with {total} objects",
            f"{steady['peak_rss_mb']:.0f} MB",
            steady["peak_rss_mb"] < PEAK_RSS_MB,
        )
        if args.growth_seconds:
            growth = rss_growth(operator, args.growth_seconds)
            targets.check(
                f"RSS growth < {RSS_GROWTH_PERCENT:.0f}% over {args.growth_seconds:.0f} s",
                f"{growth:+.1f}%",
                growth < RSS_GROWTH_PERCENT,
            )

        print(f"\nreaction: running drivers exit, {total} objects present")
        reactions = reaction(kube, "bench")
        for label, latencies in reactions.items():
            print(
                f"  {label:<40} n={len(latencies):<3} p50 {percentile(latencies, 0.5):5.2f}s "
                f"p99 {percentile(latencies, 0.99):5.2f}s"
            )
        running = reactions[RUNNING_REACTION]
        targets.check(
            f"reaction: {RUNNING_REACTION}, p99 < {REACTION_P99_SECONDS:.0f} s",
            f"{percentile(running, 0.99):.2f} s (n={len(running)})",
            bool(running) and percentile(running, 0.99) < REACTION_P99_SECONDS,
        )
        return targets.report()
    finally:
        if operator is not None:
            operator.stop()
        cluster.stop()


def _args(result: dict) -> dict:
    return {"latencies": result["latencies"], "wall": result["wall"]}


if __name__ == "__main__":
    sys.exit(main())
