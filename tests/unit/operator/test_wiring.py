"""The operator's start-up settings, command line, metrics, RBAC manifests and examples."""

from pathlib import Path

import kopf
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TrainingSpec
from soundmind.train import contract
from soundmind_operator import main, metrics

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
    monkeypatch.setattr(main, "api_client", lambda: None)
    fresh = metrics.OperatorMetrics
    monkeypatch.setattr(metrics, "OperatorMetrics", lambda: fresh(CollectorRegistry()))
    settings = kopf.OperatorSettings()
    memo = kopf.Memo(options=main.Options(resync_seconds=3, metrics_port=0))
    main.configure(settings=settings, memo=memo, logger=None)
    assert settings.watching.server_timeout == 300 and settings.watching.client_timeout > 300
    assert settings.persistence.finalizer == "soundmind.ai/finalizer"
    assert settings.persistence.progress_storage.prefix == GROUP
    assert settings.posting.enabled and settings.posting.reporting_component == "soundmind-operator"
    assert settings.scanning.disabled, "the RBAC grants no CRD or namespace watching"
    assert memo.training.resync_seconds == 3


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


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("training*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_trainings(path: Path):
    (manifest,) = yaml.safe_load_all(path.read_text())
    assert manifest["apiVersion"] == f"{GROUP}/{VERSION}" and manifest["kind"] == "SoundMindTraining"
    TrainingSpec.model_validate(manifest["spec"])
