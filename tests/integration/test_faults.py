"""The operator under faults: killed mid-burst, its API server restarted, a node lost, two replicas.

These tests own their control plane (they restart its API server and delete its nodes), so the
module starts a private local cluster with three simulated 8-GPU nodes instead of the session's.
Each test is bounded and ends by itself. Sizes are small so that CI stays fast; the issue's full
sizes are one environment variable away:

    SOUNDMIND_FAULT_BURST=200 SOUNDMIND_FAULT_SEEDS=10 make integration

What every burst must end with, however often the operator died on the way (`assert_consistent`):
exactly one Job per attempt and none for a later attempt, the attempt each training's pods say,
no duplicate retries (attempt 2 after one failure, never 3), no child without a live owner, and
GPU-seconds counted once (the pod's GPU time, not twice that).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING
from soundmind_operator import loop, metrics
from soundmind_operator.training import names
from tests.support import operator as op
from tests.support import sim
from tests.support.kube import Kube
from tests.support.localcluster import LocalCluster, default_bin_dir
from tests.support.poll import wait_for

# These tests restart their API server, so they always run on a private local cluster (also when
# SOUNDMIND_TEST_KUBECONFIG names another one for the rest of the suite).
pytestmark = pytest.mark.integration

IMAGE = "registry.invalid/soundmind/trainer:sim"
BURST = int(os.environ.get("SOUNDMIND_FAULT_BURST", "30"))
SEEDS = list(range(int(os.environ.get("SOUNDMIND_FAULT_SEEDS", "2"))))
NODES = 3
ONE_GPU = {"image": IMAGE, "maxRetries": 3, "resources": {"gpusPerNode": 1, "cpu": "1", "memory": "1Gi"}}
CHILD_KINDS = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service", "Job")


# -- fixtures: a private cluster and operator ---------------------------------------------------


@pytest.fixture(scope="module")
def cluster(cluster_bin_dir: Path) -> Iterator[LocalCluster]:
    """The binaries come from the `cluster_bin_dir` fixture: missing ones fail the run in CI. No real
    node: these faults concern the operator and the control plane, on simulated nodes."""
    started = LocalCluster.start(cluster_bin_dir, nodes=NODES, real_node=False)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def kube(cluster: LocalCluster) -> Iterator[Kube]:
    connected = Kube.connect(cluster.kubeconfig, kubectl=default_bin_dir() / "kubectl")
    op.install_crds(connected)
    op.install_rbac(connected)
    yield connected
    connected.api_client.close()


@pytest.fixture(scope="module")
def operator(kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[op.OperatorProcess]:
    workdir = tmp_path_factory.mktemp("faults-operator")
    kubeconfig = wait_for(
        lambda: _or_none(lambda: op.service_account_kubeconfig(kube, workdir / "operator.kubeconfig")),
        timeout=30,
        what="a token for the operator's ServiceAccount",
    )
    process = op.OperatorProcess(kubeconfig, workdir / "operator.log").start()
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture
def bare_ns(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace, deleted afterwards."""
    name = f"f-{abs(hash(request.node.name)) % 10**8}"
    kube.core_v1.create_namespace({"metadata": {"name": name}})
    wait_for(
        lambda: _or_none(lambda: kube.core_v1.read_namespaced_service_account("default", name)),
        timeout=30,
        what=f"default ServiceAccount of {name}",
    )
    yield name
    kube.core_v1.delete_namespace(name)


@pytest.fixture
def ns(kube: Kube, bare_ns: str) -> Iterator[str]:
    """A new namespace with the volumes trainings mount."""
    yield from op.with_volumes(kube, bare_ns)


def _or_none(read):
    try:
        return read()
    except ApiException as error:
        if error.status in (404, 403, 500, 503):
            return None
        raise
    except OSError:
        return None


# -- helpers ------------------------------------------------------------------------------------


def manifest(name: str, spec: dict) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": TRAINING.kind, "metadata": {"name": name}, "spec": spec}


def create_burst(kube: Kube, ns: str, count: int, spec: dict = ONE_GPU, prefix: str = "t") -> list[str]:
    """Create `count` trainings from 16 threads; a create that fails (the API server is away) is
    retried until it succeeds or the object is there."""
    created = [f"{prefix}-{i}" for i in range(count)]

    def create(name: str) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                kube.custom_objects.create_namespaced_custom_object(
                    GROUP, VERSION, ns, TRAINING.plural, manifest(name, spec), _request_timeout=10
                )
                return
            except ApiException as error:
                if error.status == 409:
                    return
                if time.monotonic() > deadline:
                    raise
            except Exception:  # noqa: BLE001 - connection refused/reset while the API server restarts
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, created))
    return created


def trainings(kube: Kube, ns: str) -> dict[str, dict]:
    items = kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural)["items"]
    return {t["metadata"]["name"]: t for t in items}


def phase(training: dict) -> str | None:
    return (training.get("status") or {}).get("phase")


def wait_all(kube: Kube, ns: str, names_: list[str], predicate, what: str, timeout: float = 180) -> dict[str, dict]:
    """Until `predicate(training, job_names)` holds for every one of `names_` (job_names: the
    namespace's Jobs, listed at each check)."""

    def late_ones() -> tuple[dict[str, dict], list[str]]:
        now = trainings(kube, ns)
        jobs = {j.metadata.name for j in kube.batch_v1.list_namespaced_job(ns).items}
        return now, [n for n in names_ if n not in now or not predicate(now[n], jobs)]

    try:
        return wait_for(
            lambda: (lambda now, late: None if late else now)(*late_ones()),
            timeout=timeout,
            interval=0.5,
            what=f"{len(names_)} trainings: {what}",
        )
    except AssertionError:
        now, late = late_ones()
        first = [(n, (now.get(n) or {}).get("status")) for n in late[:3]]
        raise AssertionError(f"{len(late)} trainings not {what}; first: {first}") from None


def has_job(training: dict, jobs: set[str]) -> bool:
    """It has a phase, and the Job its status names exists."""
    return phase(training) is not None and (training.get("status") or {}).get("jobName") in jobs


def counter(operator: op.OperatorProcess, name: str, **labels: str) -> float:
    """The sum of the operator's samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


KILLS_PER_SEED = 5


def kill_at_random(operator: op.OperatorProcess, rng: random.Random, stop: threading.Event, kills: list[float]):
    """SIGKILL the operator at random moments (up to KILLS_PER_SEED times, or until `stop`),
    restarting it each time: then it runs on, so the test ends."""
    while len(kills) < KILLS_PER_SEED and not stop.wait(rng.uniform(0.5, 4.0)):
        operator.stop(signal.SIGKILL)
        kills.append(time.monotonic())
        operator.start()


def end_running_pods(kube: Kube, ns: str, exit_code_of) -> dict[str, int]:
    """End each running trainer pod with `exit_code_of(training)` (None: leave it); {training: code}."""
    ended = {}
    for pod in kube.core_v1.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=trainer").items:
        training = pod.metadata.labels["app.kubernetes.io/instance"]
        code = exit_code_of(training)
        if pod.status.phase == "Running" and code is not None and not pod.metadata.deletion_timestamp:
            kube.core_v1.patch_namespaced_pod(
                pod.metadata.name, ns, {"metadata": {"annotations": {sim.EXIT_CODE: str(code)}}}
            )
            ended[training] = code
    return ended


def parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def assert_consistent(kube: Kube, ns: str, expected_attempt: dict[str, int]) -> None:
    """Exactly one Job per attempt (the current one; earlier ones deleted), no child without a live
    owner, no duplicate retries, GPU-seconds of each finished attempt counted once."""
    now = trainings(kube, ns)
    uids = {t["metadata"]["uid"] for t in now.values()}
    jobs = [j for j in kube.batch_v1.list_namespaced_job(ns).items if not j.metadata.deletion_timestamp]
    by_training: dict[str, list[str]] = {}
    for job in jobs:
        by_training.setdefault(job.metadata.labels["app.kubernetes.io/instance"], []).append(job.metadata.name)
    problems = []
    for name, training in now.items():
        status = training.get("status") or {}
        attempt = status.get("attempt")
        if attempt != expected_attempt.get(name, 1):
            problems.append(f"{name}: attempt {attempt}, expected {expected_attempt.get(name, 1)}")
        if sorted(by_training.get(name, [])) != [names.job(name, attempt or 1)]:
            problems.append(f"{name}: Jobs {sorted(by_training.get(name, []))} at attempt {attempt}")
    listers = {
        "ConfigMap": kube.core_v1.list_namespaced_config_map,
        "ServiceAccount": kube.core_v1.list_namespaced_service_account,
        "Role": kube.rbac_v1.list_namespaced_role,
        "RoleBinding": kube.rbac_v1.list_namespaced_role_binding,
        "Service": kube.core_v1.list_namespaced_service,
        "Job": kube.batch_v1.list_namespaced_job,
    }
    for kind, lister in listers.items():
        for child in lister(ns, label_selector="app.kubernetes.io/managed-by=soundmind-operator").items:
            owners = [o.uid for o in child.metadata.owner_references or []]
            if not owners or not set(owners) & uids:
                problems.append(f"orphaned {kind} {child.metadata.name} (owners {owners})")
            if kind != "Job" and len(lister(ns, field_selector=f"metadata.name={child.metadata.name}").items) != 1:
                problems.append(f"duplicate {kind} {child.metadata.name}")
    assert not problems, "\n".join(problems[:20])


def assert_gpu_seconds_once(kube: Kube, ns: str, finished: list[str]) -> None:
    """A 1-GPU training that ran one attempt from its pod's start to its exit: gpuSeconds is that
    span (whole seconds at the boundaries), not a multiple of it."""
    now = trainings(kube, ns)
    pods = {
        p.metadata.labels["app.kubernetes.io/instance"]: p
        for p in kube.core_v1.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=trainer").items
    }
    problems = []
    for name in finished:
        pod = pods.get(name)
        if pod is None or not pod.status.container_statuses:
            continue  # Job's pod already gone: nothing to compare against
        terminated = pod.status.container_statuses[0].state.terminated
        if terminated is None:
            continue
        ran = (terminated.finished_at - pod.status.start_time).total_seconds()
        counted = (now[name].get("status") or {}).get("gpuSeconds") or 0.0
        if not ran - 2 <= counted <= ran + 2:
            problems.append(f"{name}: gpuSeconds {counted}, the pod held its GPU {ran:.0f}s")
    assert not problems, "\n".join(problems[:20])


# -- the operator killed at random moments during a burst ---------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_operator_sigkilled_at_random_during_a_burst(
    kube: Kube, ns: str, operator: op.OperatorProcess, seed: int, figure
):
    rng = random.Random(seed)
    stop, kills = threading.Event(), []
    killer = threading.Thread(target=kill_at_random, args=(operator, rng, stop, kills), daemon=True)
    began = time.monotonic()
    killer.start()
    try:
        created = create_burst(kube, ns, BURST)
        wait_all(kube, ns, created, has_job, "a Job and a phase")
        # Half the running ones succeed, the other half fail once and are retried, still under fire.
        running = sorted(n for n, t in trainings(kube, ns).items() if phase(t) == "Running")
        fail = set(running[::2])
        ended = end_running_pods(kube, ns, lambda t: (1 if t in fail else 0) if t in running else None)
        expected = {t: 2 for t, code in ended.items() if code}
        succeeded = [t for t, code in ended.items() if not code]
        wait_all(
            kube,
            ns,
            list(ended),
            lambda t, _: (
                phase(t) == "Succeeded"
                if t["metadata"]["name"] in succeeded
                else (t.get("status") or {}).get("attempt") == 2 and phase(t) in ("Pending", "Running")
            ),
            "Succeeded, or retried once",
        )
    finally:
        stop.set()
        killer.join(timeout=90)
    figure(
        f"operator SIGKILLed during a burst, seed {seed}: {BURST} trainings, {len(kills)} SIGKILLs, "
        f"{time.monotonic() - began:.0f}s"
    )
    assert kills, "the operator was killed at least once"
    time.sleep(3)  # the last pass after the last restart settles the deletions of attempt-1 Jobs
    wait_for(
        lambda: not [j for j in kube.batch_v1.list_namespaced_job(ns).items if j.metadata.deletion_timestamp],
        timeout=60,
        what="deleted Jobs gone",
    )
    assert_consistent(kube, ns, expected)
    assert_gpu_seconds_once(kube, ns, succeeded)


# -- a node lost under a running two-node training ----------------------------------------------


def test_lost_node_is_retried_as_the_next_attempt(kube: Kube, ns: str, operator: op.OperatorProcess):
    spec = {"image": IMAGE, "maxRetries": 2, "resources": {"nodes": 2, "gpusPerNode": 8, "cpu": "1", "memory": "1Gi"}}
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, manifest("wide", spec))
    wait_all(kube, ns, ["wide"], lambda t, _: phase(t) == "Running", "Running", timeout=60)
    pods = kube.core_v1.list_namespaced_pod(ns, label_selector=f"{names.JOB_NAME_LABEL}=wide-a1").items
    lost = pods[0].spec.node_name
    kube.core_v1.delete_node(lost)
    try:
        training = wait_all(
            kube,
            ns,
            ["wide"],
            lambda t, _: (t.get("status") or {}).get("attempt") == 2 and phase(t) == "Running",
            "Running as attempt 2 on the two nodes left",
            timeout=150,
        )["wide"]
        conditions = {c["type"]: c for c in training["status"]["conditions"]}
        print({k: (c["reason"], c["message"]) for k, c in conditions.items()})
        events = kube.core_v1.list_namespaced_event(
            ns, field_selector="involvedObject.kind=SoundMindTraining,involvedObject.name=wide"
        ).items
        retrying = [e.message for e in events if e.reason == "Retrying"]
        assert len(retrying) == 1 and lost in retrying[0], retrying
        assert [
            j.metadata.name for j in kube.batch_v1.list_namespaced_job(ns).items if not j.metadata.deletion_timestamp
        ] == ["wide-a2"]
    finally:
        index = int(lost.removeprefix(sim.NODE_NAME_PREFIX))
        kube.core_v1.create_node(sim.node_manifest(index))


# -- two replicas with peering -------------------------------------------------------------------

PEERING = "soundmind-operator"
# The bound: a lease-based controller hands over in about 15 s (main.PEERING_LIFETIME_SECONDS).
STANDBY_TAKEOVER_SECONDS = 20


def test_standby_replica_takes_over_when_the_active_one_is_killed(
    kube: Kube, ns: str, operator: op.OperatorProcess, tmp_path: Path, figure
):
    kube.kubectl("apply", "-f", str(op.ROOT / "config" / "crd" / "kopf-peering.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    kube.kubectl("apply", "-f", str(op.RBAC_DIR / "peering_cluster_role.yaml"))
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    try:
        kube.custom_objects.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    except ApiException as error:
        if error.status != 409:
            raise
    operator.stop()  # the module's standalone replica makes way for the pair
    replicas = {
        priority: op.OperatorProcess(
            operator.kubeconfig,
            tmp_path / f"replica-{priority}.log",
            extra_args=(f"--peering={PEERING}", f"--priority={priority}"),
        )
        for priority in (2, 1)
    }
    active, standby = replicas[2], replicas[1]
    try:
        active.start()
        create_burst(kube, ns, 5, prefix="before")
        wait_all(kube, ns, [f"before-{i}" for i in range(5)], has_job, "a Job and a phase", timeout=60)
        standby.start()
        started_with = counter(standby, metrics.API_REQUESTS)  # its start-up's discovery of optional APIs
        create_burst(kube, ns, 5, prefix="both")
        wait_all(kube, ns, [f"both-{i}" for i in range(5)], has_job, "a Job and a phase", timeout=60)
        time.sleep(3)
        assert counter(standby, metrics.RECONCILE_TOTAL) == 0, "the standby reconciled while the active one ran"
        assert counter(standby, metrics.API_REQUESTS) == started_with

        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        create_burst(kube, ns, 5, prefix="after")
        wait_all(kube, ns, [f"after-{i}" for i in range(5)], has_job, "taken over", timeout=120)
        took = time.monotonic() - killed
        figure(f"peering: the standby took over {took:.0f}s after the active replica was killed")
        assert counter(standby, metrics.RECONCILE_TOTAL) > 0
        assert took < STANDBY_TAKEOVER_SECONDS, f"the standby took {took:.0f} s to take over"
        assert_consistent(kube, ns, {})
    finally:
        for replica in replicas.values():
            replica.stop()
        operator.start()


# -- the API server restarted during a burst ----------------------------------------------------


def test_apiserver_restart_during_a_burst(
    kube: Kube, bare_ns: str, operator: op.OperatorProcess, cluster: LocalCluster, figure
):
    # No volumes: a Job and a phase are what is asked, and the pods may wait (the controller
    # manager's informers take their time to come back, which a volumes' teardown would wait for).
    ns = bare_ns
    pid = operator.process.pid
    errors_before = counter(operator, metrics.RECONCILE_TOTAL, result="error")
    created: list[str] = []
    burst = threading.Thread(target=lambda: created.extend(create_burst(kube, ns, BURST, prefix="r")), daemon=True)
    burst.start()
    time.sleep(2)  # mid-burst
    away = time.monotonic()
    cluster.restart_apiserver(down_seconds=3)
    away = time.monotonic() - away
    burst.join(timeout=150)
    assert len(created) == BURST, "the burst was created, the API server's absence notwithstanding"
    wait_all(kube, ns, created, has_job, "a Job and a phase after the API server restart")
    assert operator.process.pid == pid and operator.process.poll() is None, "the operator did not restart"
    errors = counter(operator, metrics.RECONCILE_TOTAL, result="error") - errors_before
    # Each loop backs off (0.5, 1, 2, 5, 10 s ...) while the API server is away: one failure per
    # backoff step that fits in the outage (and one more, the pass that was under way), not one
    # per resync (1 s here) or per watch event.
    steps = 1 + sum(1 for waited in itertools.accumulate(loop.ERROR_BACKOFF_SECONDS) if waited < away)
    figure(f"API server away {away:.0f}s during a burst of {BURST}: {errors:.0f} failed passes (bound {steps}/object)")
    assert errors <= (steps + 1) * BURST, f"{errors:.0f} failed passes for {BURST} objects: a storm"
    assert_consistent(kube, ns, {})


# -- the trainer's progress reporter while the API server is away --------------------------------


def test_progress_reporter_survives_the_apiserver_going_away(
    kube: Kube, bare_ns: str, cluster: LocalCluster, tmp_path: Path, figure
):
    ns = bare_ns
    from soundmind.train import contract
    from soundmind.train.metrics import TrainMetrics
    from soundmind.train.progress import ProgressReporter, status_patcher

    kube.custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, TRAINING.plural, manifest("reporting", {"image": IMAGE, "suspend": True})
    )
    checkpoint_dir = tmp_path / "reporting"
    log_path = Path(contract.attempt_log_path(str(checkpoint_dir), attempt=1))
    log_path.parent.mkdir(parents=True)
    train_metrics = TrainMetrics()
    reporter = ProgressReporter(
        log_path,
        checkpoint_dir,
        train_metrics,
        status_patcher(kube.api_client, ns, "reporting", timeout=2),
        total_steps=20,
        interval=0.2,
        max_backoff=2.0,  # the production cap is 300 s; the behaviour is the same
        log=lambda message: None,
    )
    stop = threading.Event()
    reporting = threading.Thread(target=reporter.run, args=(stop, 0.1), daemon=True)
    reporting.start()

    def write_steps(steps: range) -> None:
        with log_path.open("a") as log:
            for step in steps:
                log.write(f'{{"step": {step}, "data": {{"critic/score/mean": {step / 20}}}}}\n')
        if steps.stop > 11:
            (checkpoint_dir / "latest_checkpointed_iteration.txt").write_text("10")

    def reported() -> dict:
        training = kube.custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, "reporting")
        return training.get("status") or {}

    try:
        write_steps(range(1, 6))
        wait_for(lambda: reported().get("progress", {}).get("step") == 5, timeout=30, what="step 5 reported")

        def train_on() -> None:  # a step every half second, across the API server's absence
            for step in range(6, 21):
                write_steps(range(step, step + 1))
                time.sleep(0.5)

        training_on = threading.Thread(target=train_on, daemon=True)
        training_on.start()
        cluster.restart_apiserver(down_seconds=5)
        training_on.join(timeout=60)
        status = wait_for(
            lambda: (s := reported()).get("progress", {}).get("step") == 20 and s, timeout=30, what="step 20 reported"
        )
    finally:
        stop.set()
        reporting.join(timeout=10)
    failures = train_metrics.status_patch_failures._value.get()
    figure(f"reporter: {failures:.0f} failed patches while the API server was away, then step 20 reported")
    assert failures > 0, "the API server was away during a patch"
    assert status["progress"]["rewardMean"] == pytest.approx(1.0)
    assert status["checkpoint"]["step"] == 10
