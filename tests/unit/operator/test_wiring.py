"""The operator's start-up settings, command line, metrics, RBAC manifests and examples."""

import asyncio
import inspect
import logging
from pathlib import Path

import kopf
import kubernetes
import pytest
import yaml
from kopf._cogs.structs.references import Resource
from prometheus_client import CollectorRegistry, generate_latest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind.serve.render import checked_arguments
from soundmind.train import contract
from soundmind_operator import main, metrics, references
from soundmind_operator.cache import WATCHED
from soundmind_operator.labels import MANAGED_SELECTOR
from soundmind_operator.loop import Wakeups
from soundmind_operator.serving.builders import Platform

ROOT = Path(__file__).resolve().parents[3]
RBAC = ROOT / "config" / "rbac"


def test_command_line_needs_a_scope():
    with pytest.raises(SystemExit):
        main.parse_args([])
    args = main.parse_args(["-n", "a", "--namespace", "b"])
    assert args.namespace == ["a", "b"] and args.peering is None
    assert main.parse_args(["--all-namespaces", "--peering", "soundmind"]).peering == "soundmind"
    with pytest.raises(SystemExit):
        main.parse_args(["-A", "-n", "a"])


def test_startup_settings(monkeypatch):
    monkeypatch.setattr(main, "api_client", lambda connections: None)
    discovered = (["v1beta2", "v1beta1"], True, Platform(keda=True))
    monkeypatch.setattr(main, "_discover", lambda kube, options: discovered)
    settings = kopf.OperatorSettings()
    memo = kopf.Memo(
        options=main.Options(resync_seconds=3, metrics_port=0), metrics=metrics.OperatorMetrics(CollectorRegistry())
    )
    asyncio.run(main.configure(settings=settings, memo=memo, logger=logging.getLogger("test")))
    assert settings.watching.server_timeout == 300 and settings.watching.client_timeout > 300
    assert settings.persistence.finalizer == "soundmind.ai/finalizer"
    assert settings.posting.enabled and settings.posting.reporting_component == "soundmind-operator"
    # Events are the decisions' own (kopf.event) and logged warnings; INFO log lines would repeat them.
    assert settings.posting.level == logging.WARNING
    assert settings.scanning.disabled, "the RBAC grants no CRD or namespace watching"
    assert memo.loop.resync_seconds == 3
    assert memo.training.kueue_version == "v1beta2" and memo.serving.platform.keda
    assert memo.training.pod_group_api, "the PodGroup API is discovered once, at start-up"
    # Every watched child kind is filtered by the API server to the operator's own objects.
    for watched in WATCHED:
        assert settings.watching.label_selectors.collect(_resource(watched)) == [MANAGED_SELECTOR]


def _resource(watched) -> Resource:
    return Resource(watched.group, watched.version, watched.plural)


def test_every_handler_runs_on_the_event_loop():
    """kopf runs a sync handler in a thread pool; the wake-ups and metrics belong to the loop."""
    handlers = [
        handler
        for registry in (
            kopf.get_default_registry()._indexing,
            kopf.get_default_registry()._watching,
            kopf.get_default_registry()._spawning,
            kopf.get_default_registry()._changing,
            kopf.get_default_registry()._activities,
        )
        for handler in registry.get_all_handlers()
        if handler.fn.__module__.startswith("soundmind_operator")  # not kopf's own login handlers
    ]
    assert len(handlers) > 2 * len(WATCHED)
    sync = [h.id for h in handlers if not inspect.iscoroutinefunction(h.fn)]
    assert not sync, f"handlers kopf would run in threads: {sync}"


def test_kopf_writes_nothing_but_its_finalizer_onto_our_objects():
    """A resource-changing handler (on.create/update/delete) makes kopf write its last-handled
    configuration onto every new object: a second PATCH, a watch event, and a first pass lost to
    the 409. Deletion is seen by the on.event handlers instead."""
    ours = [h.id for h in kopf.get_default_registry()._changing.get_all_handlers()]
    assert not ours, f"resource-changing handlers: {ours}"


def test_kopfs_api_session_has_a_bounded_connection_pool(tmp_path, monkeypatch):
    SERVER = "https://127.0.0.1:6443"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    # The client reads $KUBECONFIG once, at import.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    memo = kopf.Memo(options=main.Options(kopf_connections=5))

    async def login() -> tuple[kopf.AiohttpSession, int]:
        info = await main.login(logger=logging.getLogger("test"), settings=kopf.OperatorSettings(), memo=memo)
        limit = info.aiohttp_session.connector.limit
        await info.aiohttp_session.close()
        return info, limit

    info, limit = asyncio.run(login())
    assert info.server == SERVER
    assert info.aiohttp_session.headers["Authorization"] == "Bearer t0ken"
    assert limit == main.WATCH_STREAMS + 5 > len(WATCHED)


def test_a_wake_up_from_a_worker_thread_is_refused():
    wakeups = Wakeups()

    async def subscribe_then_wake_from_a_thread():
        event = wakeups.subscribe("SoundMindTraining", "ns", "alr")
        with pytest.raises(RuntimeError):
            await asyncio.to_thread(wakeups.wake, "SoundMindTraining", "ns", "alr")
        assert not event.is_set()
        wakeups.wake("SoundMindTraining", "ns", "alr")
        assert event.is_set()
        wakeups.wake("SoundMindServing", "ns", "alr")  # another kind's loop of the same name: not ours

        # The event of the loop's own write is no news; anyone else's change is.
        event.clear()
        wakeups.own_writes[("SoundMindTraining", "ns", "alr")] = frozenset({"42"})
        wakeups.wake("SoundMindTraining", "ns", "alr", resource_version="42")
        assert not event.is_set()
        wakeups.wake("SoundMindTraining", "ns", "alr", resource_version="43")
        assert event.is_set()

    asyncio.run(subscribe_then_wake_from_a_thread())


def test_metrics_are_exported_under_the_names_of_the_metrics_module():
    registry = CollectorRegistry()
    exported = metrics.OperatorMetrics(registry)
    exported.reconcile_total.labels("SoundMindTraining", metrics.RESULT_OK).inc()
    exported.reconcile_duration.labels("SoundMindTraining", metrics.RESULT_OK).observe(0.01)
    exported.observe_training("ns", "alr", phase="Running", requested=16, running=16, gpu_seconds=160.0)
    exported.retries.labels("ns", "alr").inc()
    exported.pending_duration.observe(2.0)
    text = generate_latest(registry).decode()
    for name in (
        metrics.RECONCILE_TOTAL,
        metrics.RECONCILE_DURATION,
        metrics.TRAININGS,
        metrics.TRAINING_GPUS_REQUESTED,
        metrics.TRAINING_GPUS_RUNNING,
        metrics.TRAINING_GPU_SECONDS,
        metrics.TRAINING_RETRIES,
        metrics.TRAINING_PENDING_DURATION,
    ):
        assert f"\n{name}" in text, name
    assert 'soundmind_trainings{phase="Running"} 1.0' in text
    exported.forget_training("ns", "alr")
    text = generate_latest(registry).decode()
    assert 'training="alr"' not in text and 'soundmind_trainings{phase="Running"} 0.0' in text


def test_trainings_by_phase_follow_each_training_to_its_last_phase():
    registry = CollectorRegistry()
    exported = metrics.OperatorMetrics(registry)

    def by_phase() -> dict[str, float]:
        return {p: registry.get_sample_value(metrics.TRAININGS, {"phase": p}) for p in ("Pending", "Running")}

    for name, phase in (("a", "Pending"), ("b", "Pending"), ("a", "Running"), ("a", "Running"), ("b", None)):
        exported.observe_training("ns", name, phase=phase, requested=1, running=0, gpu_seconds=0.0)
    assert by_phase() == {"Pending": 1, "Running": 1}
    exported.forget_training("ns", "b")
    exported.forget_training("ns", "b")  # twice: the second finds nothing
    assert by_phase() == {"Pending": 0, "Running": 1}


def _rules(path: Path) -> list[dict]:
    return [
        rule for doc in yaml.safe_load_all(path.read_text()) if doc["kind"] == "ClusterRole" for rule in doc["rules"]
    ]


def _grants(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def test_operator_holds_what_it_grants_the_trainer():
    """RBAC lets the operator create the trainer's Role only with permissions it holds itself."""
    rules = _rules(RBAC / "cluster_role.yaml")
    for rule in contract.trainer_role_rules("alr"):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert _grants(rules, group, resource, verb), (group, resource, verb)


def test_cluster_role_has_no_wildcards_and_is_bound_to_the_service_account():
    rules = _rules(RBAC / "cluster_role.yaml") + _rules(RBAC / "peering_cluster_role.yaml")
    assert all("*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"] for r in rules)
    binding = yaml.safe_load((RBAC / "cluster_role_binding.yaml").read_text())
    account = yaml.safe_load((RBAC / "service_account.yaml").read_text())
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    assert _grants(_rules(RBAC / "cluster_role.yaml"), GROUP, "soundmindtrainings/status", "patch")


SPECS = {TRAINING.kind: TrainingSpec, SERVING.kind: ServingSpec}


@pytest.mark.parametrize(
    "path", sorted([*ROOT.glob("examples/training*.yaml"), ROOT / "examples" / "serving.yaml"]), ids=lambda p: p.name
)
def test_examples_are_valid(path: Path):
    (manifest,) = yaml.safe_load_all(path.read_text())
    assert manifest["apiVersion"] == f"{GROUP}/{VERSION}"
    SPECS[manifest["kind"]].model_validate(manifest["spec"])


def test_example_serving_renders_a_command_vllm_accepts():
    (manifest,) = yaml.safe_load_all((ROOT / "examples" / "serving.yaml").read_text())
    spec = ServingSpec.model_validate(manifest["spec"])
    assert checked_arguments(spec, spec.model)[0] == "Qwen/Qwen2.5-Omni-7B"


def test_peer_identity_needs_no_password_database_entry(monkeypatch):
    """The image runs as a numeric UID it does not list; kopf's default identity would die on it."""
    import pwd

    def unknown(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", unknown)
    monkeypatch.setattr(main.socket, "gethostname", lambda: "soundmind-operator-7d9f-abcde")
    assert main.peer_identity() == f"soundmind-operator-7d9f-abcde/{main.os.getpid()}"


def test_claim_and_node_events_wake_only_the_objects_they_concern():
    """A claim's event wakes the objects that mount it; a node's, only when its labels or
    allocatable change, and only the objects whose verdict that changes (heartbeats: none)."""
    fits = references.needs_of(TRAINING.kind, {"image": "x"})
    big = references.needs_of(TRAINING.kind, {"image": "x", "resources": {"gpusPerNode": 16}})
    omni = references.needs_of(SERVING.kind, {"model": "m"})

    def index(*entries: dict) -> dict:
        """kopf's index: each key -> the values of every object that has it."""
        merged: dict = {}
        for entry in entries:
            for key, value in entry.items():
                merged.setdefault(key, []).append(value)
        return merged

    indices = {
        "training_references": index(references.users("ns", "fits", fits), references.users("ns", "big", big)),
        "serving_references": index(references.users("ns", "omni", omni)),
    }
    memo = kopf.Memo(
        loop=main.loop.LoopContext(metrics=None, resync_seconds=1), node_verdicts=references.NodeVerdicts()
    )

    def node(gpus: str, heartbeat: str, name: str = "n") -> dict:
        return {
            "metadata": {"name": name, "labels": {}},
            "status": {"allocatable": {"nvidia.com/gpu": gpus}, "conditions": [{"lastHeartbeatTime": heartbeat}]},
        }

    async def woken_by(event) -> set[str]:
        loops = {
            name: memo.loop.wakeups.subscribe(kind, "ns", name)
            for kind, name in ((TRAINING.kind, "fits"), (TRAINING.kind, "big"), (SERVING.kind, "omni"))
        }
        for wake in loops.values():
            wake.clear()
        await event
        return {name for name, wake in loops.items() if wake.is_set()}

    async def run() -> None:
        claim = main.wake_claim_users
        assert await woken_by(claim(namespace="ns", name="models", memo=memo, **indices)) == {"fits", "big", "omni"}
        assert await woken_by(claim(namespace="ns", name="alr-data", memo=memo, **indices)) == {"fits", "big"}
        seen = main.wake_node_users
        assert await woken_by(seen(type=None, name="n", body=node("8", "t0"), memo=memo, **indices)) == {"big"}
        assert await woken_by(seen(type="MODIFIED", name="n", body=node("8", "t1"), memo=memo, **indices)) == set()
        big_node = node("16", "t2", "m")
        assert await woken_by(seen(type="ADDED", name="m", body=big_node, memo=memo, **indices)) == {"big"}
        assert await woken_by(seen(type="MODIFIED", name="n", body=node("16", "t3"), memo=memo, **indices)) == set()
        assert await woken_by(seen(type="DELETED", name="m", body=big_node, memo=memo, **indices)) == set()
        assert await woken_by(seen(type="MODIFIED", name="n", body=node("8", "t4"), memo=memo, **indices)) == {"big"}

    asyncio.run(run())
