"""The trainer's progress reporter against a real API server, with a training pod's credentials.

A recorded verl file-logger stream (tests/fixtures/verl_file_logger.jsonl: 12 GRPO steps over 4
epochs with validation and checkpoints every 5 steps, written by verl 0.9.1's own FileLogger with the
metric keys its trainer logs) is replayed line by line into a log file, with verl's
`latest_checkpointed_iteration.txt` written where verl writes it. The real reporter, authenticated as a
ServiceAccount bound to exactly `trainer_role_rules(name)`, must carry each state into the
SoundMindTraining's status and its metrics endpoint, and must be refused any other training.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from soundmind.api.base import API_VERSION, GROUP, VERSION
from soundmind.api.training import TRAINING
from soundmind.train import contract
from soundmind.train import metrics as names
from soundmind.train.metrics import TrainMetrics
from soundmind.train.progress import ProgressReporter, status_patcher
from tests.support.kube import Kube
from tests.support.poll import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "verl_file_logger.jsonl"
CRDS = sorted((ROOT / "charts" / "soundmind-crds" / "templates").glob("*.yaml"))
TOTAL_STEPS = 12


def install_crds(kube: Kube) -> None:
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        try:
            kube.apiextensions_v1.create_custom_resource_definition(crd)
        except ApiException as error:
            if error.status != 409:
                raise
            current = kube.apiextensions_v1.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            kube.apiextensions_v1.replace_custom_resource_definition(crd["metadata"]["name"], crd)

        def established(name=crd["metadata"]["name"]) -> bool:
            conditions = kube.apiextensions_v1.read_custom_resource_definition(name).status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, timeout=30, what=f"CRD {path.name} established")


def create_training(kube: Kube, namespace: str, name: str) -> None:
    body = {"apiVersion": API_VERSION, "kind": "SoundMindTraining", "metadata": {"name": name}, "spec": {}}
    # A new CRD can take a moment to be served after Established.
    wait_for(
        lambda: _created(
            lambda: kube.custom_objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, TRAINING.plural, body
            )
        ),
        timeout=30,
        what=f"SoundMindTraining {name} created",
    )


def _created(create) -> bool:
    try:
        create()
        return True
    except ApiException as error:
        if error.status == 404:
            return False
        raise


def trainer_credentials(kube: Kube, namespace: str, training: str) -> client.ApiClient:
    """An API client holding only a token of a ServiceAccount bound to the trainer's Role."""
    account = f"{training}-trainer"
    kube.core_v1.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata={"name": account}))
    kube.rbac_v1.create_namespaced_role(
        namespace, {"metadata": {"name": account}, "rules": contract.trainer_role_rules(training)}
    )
    kube.rbac_v1.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    )
    token = kube.core_v1.create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    ).status.token
    admin = kube.api_client.configuration
    configuration = client.Configuration(host=admin.host, api_key={"authorization": f"Bearer {token}"})
    configuration.ssl_ca_cert, configuration.verify_ssl = admin.ssl_ca_cert, admin.verify_ssl
    return client.ApiClient(configuration)


def status_of(kube: Kube, namespace: str, name: str) -> dict:
    training = kube.custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, TRAINING.plural, name)
    return training.get("status") or {}


def test_status_and_metrics_follow_the_verl_log(kube: Kube, namespace: str, tmp_path: Path):
    install_crds(kube)
    create_training(kube, namespace, "alr-grpo")
    create_training(kube, namespace, "someone-else")
    trainer_api = trainer_credentials(kube, namespace, "alr-grpo")

    checkpoint_dir = tmp_path / "alr-grpo"
    log_path = Path(contract.attempt_log_path(str(checkpoint_dir), attempt=1))
    log_path.parent.mkdir(parents=True)
    metrics = TrainMetrics()
    server = metrics.serve(0, "127.0.0.1")
    reporter = ProgressReporter(
        log_path,
        checkpoint_dir,
        metrics,
        status_patcher(trainer_api, namespace, "alr-grpo"),
        total_steps=TOTAL_STEPS,
        interval=0.5,
    )
    stop = threading.Event()
    reporting = threading.Thread(target=reporter.run, args=(stop, 0.1), daemon=True)
    reporting.start()
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]

    def replay(until_step: int) -> dict:
        """Write the log (and checkpoints) as verl would up to `until_step`; return that step's metrics."""
        with log_path.open("a", buffering=1) as log:
            for record in records:
                if record["step"] <= replay.done:
                    continue
                if record["step"] > until_step:
                    break
                if record["step"] % 5 == 0:  # verl saves the checkpoint before it logs the step
                    (checkpoint_dir / f"global_step_{record['step']}").mkdir()
                    (checkpoint_dir / "latest_checkpointed_iteration.txt").write_text(str(record["step"]))
                log.write(json.dumps(record) + "\n")
                replay.done = record["step"]
                time.sleep(0.05)
        return next(record["data"] for record in records if record["step"] == until_step)

    replay.done = -1

    def progress_at(step: int) -> dict:
        return wait_for(
            lambda: (
                (status := status_of(kube, namespace, "alr-grpo")).get("progress", {}).get("step") == step and status
            ),
            timeout=30,
            what=f"status.progress.step == {step}",
        )

    def metric(name: str) -> float | None:
        for line in httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    try:
        step5 = replay(until_step=5)
        status = progress_at(5)
        assert status["progress"]["rewardMean"] == pytest.approx(step5["critic/score/mean"])
        assert status["progress"]["valAccuracy"] == pytest.approx(step5["val-core/soundmind/alr/acc/mean@1"])
        assert status["progress"]["epoch"] == 2 and status["progress"]["totalSteps"] == TOTAL_STEPS
        assert status["checkpoint"] == {"step": 5, "path": f"{checkpoint_dir}/global_step_5"}
        assert metric(names.STEP) == 5 and metric(names.LAST_CHECKPOINT_STEP) == 5

        last = replay(until_step=TOTAL_STEPS)
        status = progress_at(TOTAL_STEPS)
        assert status["progress"]["rewardMean"] == pytest.approx(last["critic/score/mean"])
        assert status["progress"]["valAccuracy"] == pytest.approx(last["val-core/soundmind/alr/acc/mean@1"])
        assert status["progress"]["epoch"] == 4 and status["progress"]["updatedAt"].endswith("Z")
        assert status["checkpoint"] == {"step": 10, "path": f"{checkpoint_dir}/global_step_10"}

        assert metric(names.STEP) == TOTAL_STEPS and metric(names.TOTAL_STEPS) == TOTAL_STEPS
        assert metric(names.REWARD_MEAN) == pytest.approx(last["critic/score/mean"])
        assert metric(names.VAL_ACCURACY) == pytest.approx(last["val-core/soundmind/alr/acc/mean@1"])
        assert metric(names.RESPONSE_LENGTH) == pytest.approx(last["response_length/mean"])
        assert metric(names.THROUGHPUT) == pytest.approx(last["perf/throughput"])
        assert metric(names.LAST_CHECKPOINT_STEP) == 10
        assert metric(names.MALFORMED_LOG_LINES) == 0 and metric(names.STATUS_PATCH_FAILURES) == 0
    finally:
        stop.set()
        reporting.join(timeout=10)
        server.shutdown()

    # The same credentials reach nothing else: not another training's status, not its own spec.
    trainer_objects = client.CustomObjectsApi(trainer_api)
    with pytest.raises(ApiException) as refused:
        status_patcher(trainer_api, namespace, "someone-else")({"status": {"progress": {"step": 99}}})
    assert refused.value.status == 403
    with pytest.raises(ApiException) as refused:
        trainer_objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAINING.plural, "alr-grpo", {"spec": {"suspend": True}}
        )
    assert refused.value.status == 403
    assert "progress" not in status_of(kube, namespace, "someone-else")
