"""Objects outlive the CRD schema they were written under (a real API server).

* A training and a serving written under the CRDs of d294c0e (the first charted version, kept in
  tests/fixtures/crds-d294c0e; `spec.gangTimeoutSeconds`, `status.gang`, `gangReleases` and
  `gangRetryAt` came later) are read under the current CRDs with every status field they had, the
  new field defaulted, and accepted by the operator's types; their spec and status take updates.
* The name rules sit at the object's root, so the API server evaluates them on every write,
  status included. A release that tightened the name limit would then refuse each status write to
  objects named under the old limit, unless the rule is checked only on create (`oldSelf`): shown
  with the rule as it is, and with the unguarded form it had before.

Each test puts the current CRDs back when it ends.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind_operator import crds
from tests.support import operator as op
from tests.support.kube import Kube
from tests.support.poll import wait_for

PREVIOUS_CRDS = Path(__file__).resolve().parents[1] / "fixtures" / "crds-d294c0e"
NOW = "2026-12-07T10:00:00Z"


@pytest.fixture
def namespace(kube: Kube, namespace: str) -> Iterator[str]:
    """The usual test namespace, emptied of this module's custom resources before the test ends. The
    namespace controller deletes them only seconds after the namespace, and an operator the next
    module starts (it watches all namespaces) would reconcile them meanwhile: CI once counted its
    refused children of `trained-before-the-limit-fell` as reconcile errors in another test."""
    yield namespace
    kinds = (TRAINING, SERVING)
    for kind in kinds:
        kube.custom_objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)
    wait_for(
        lambda: (
            not any(
                kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]
                for kind in kinds
            )
        ),
        timeout=30,
        what=f"the custom resources of {namespace} deleted",
    )


@pytest.fixture
def current_crds_after(kube: Kube) -> Iterator[None]:
    yield
    op.install_crds(kube)


def create(kube: Kube, namespace: str, kind, name: str, spec: dict, status: dict) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind, "metadata": {"name": name}, "spec": spec}
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, body)
    patch_status(kube, namespace, kind, name, status)


def patch_status(kube: Kube, namespace: str, kind, name: str, status: dict) -> dict:
    return kube.custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, kind.plural, name, {"status": status}
    )


def patch_spec(kube: Kube, namespace: str, kind, name: str, spec: dict) -> dict:
    return kube.custom_objects.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, kind.plural, name, {"spec": spec}
    )


def get(kube: Kube, namespace: str, kind, name: str) -> dict:
    return kube.custom_objects.get_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name)


def dry_run_training(kube: Kube, namespace: str, name: str, spec: dict) -> dict:
    """What the API server would make of a new training now: which schema it serves."""
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": TRAINING.kind, "metadata": {"name": name}, "spec": spec}
    return kube.custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, TRAINING.plural, body, dry_run="All"
    )


def served_spec(kube: Kube, namespace: str, spec: dict) -> dict:
    return dry_run_training(kube, namespace, "probe", spec)["spec"]


def condition(kind: str, reason: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": reason, "lastTransitionTime": NOW}


TRAINING_STATUS = {
    "phase": "Running",
    "attempt": 2,
    "jobName": "old-run-a2",
    "startTime": NOW,
    "gpuSeconds": 1234.5,
    "observedGeneration": 1,
    "conditions": [condition("Created", "JobCreated"), condition("Running", "PodsRunning")],
    "progress": {"step": 40, "totalSteps": 1620, "epoch": 0, "rewardMean": 1.5, "updatedAt": NOW},
    "checkpoint": {"step": 40, "path": "/checkpoints/global_step_40"},
}
SERVING_STATUS = {
    "phase": "Available",
    "replicas": 2,
    "readyReplicas": 2,
    "observedGeneration": 1,
    "url": "http://old-serve.ns.svc:8000",
    "model": "Qwen/Qwen2.5-Omni-7B",
    "conditions": [condition("Available", "ReplicasReady")],
}


@pytest.mark.usefixtures("current_crds_after")
def test_objects_written_under_the_previous_crds_are_read_and_updated_under_the_current(kube: Kube, namespace: str):
    new_field = {"image": "t", "gangTimeoutSeconds": 60}
    op.install_crds(kube, PREVIOUS_CRDS)
    wait_for(
        lambda: "gangTimeoutSeconds" not in served_spec(kube, namespace, new_field),
        what="the previous schema served (it prunes spec.gangTimeoutSeconds)",
    )
    create(kube, namespace, TRAINING, "old-run", {"image": "t", "resources": {"nodes": 2}}, TRAINING_STATUS)
    serving_spec = {"model": "Qwen/Qwen2.5-Omni-7B", "autoscaling": {"enabled": False}, "replicas": 2}
    create(kube, namespace, SERVING, "old-serve", serving_spec, SERVING_STATUS)

    op.install_crds(kube)
    wait_for(
        lambda: served_spec(kube, namespace, new_field).get("gangTimeoutSeconds") == 60,
        what="the current schema served",
    )
    training = get(kube, namespace, TRAINING, "old-run")
    assert training["status"] == TRAINING_STATUS, "a status field written under the previous schema was lost"
    assert training["spec"]["gangTimeoutSeconds"] == 300, "the new field is defaulted when the old object is read"
    TrainingSpec.model_validate(training["spec"])
    serving = get(kube, namespace, SERVING, "old-serve")
    assert serving["status"] == SERVING_STATUS
    ServingSpec.model_validate(serving["spec"])

    # Updated under the current schema: a mutable spec field, and status with the new fields.
    assert patch_spec(kube, namespace, TRAINING, "old-run", {"suspend": True})["spec"]["suspend"] is True
    written = patch_status(
        kube, namespace, TRAINING, "old-run", {"phase": "Suspended", "gang": "Operator", "gangReleases": 0}
    )["status"]
    assert written == {**TRAINING_STATUS, "phase": "Suspended", "gang": "Operator", "gangReleases": 0}
    assert patch_spec(kube, namespace, SERVING, "old-serve", {"replicas": 3})["spec"]["replicas"] == 3
    held = {**condition("PodTemplateCurrent", "OperatorChangeHeld"), "status": "False"}
    conditions = [*SERVING_STATUS["conditions"], held]
    assert patch_status(kube, namespace, SERVING, "old-serve", {"conditions": conditions})["status"] == {
        **SERVING_STATUS,
        "conditions": conditions,
    }


def without_create_only_guard(crd: dict) -> dict:
    """The name rules as they were before: evaluated on every write."""
    unguarded = copy.deepcopy(crd)
    schema = unguarded["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for rule in schema["x-kubernetes-validations"]:
        rule["rule"] = rule["rule"].removeprefix("oldSelf.hasValue() || ")
        rule.pop("optionalOldSelf")
    return unguarded


def install(kube: Kube, crd: dict, directory: Path) -> None:
    directory.mkdir()
    (directory / "crd.yaml").write_text(crds.render(crd))
    op.install_crds(kube, directory)


def refused(call) -> str:
    try:
        call()
    except ApiException as error:
        if error.status == 422:
            return error.body
        raise
    return ""


@pytest.mark.usefixtures("current_crds_after")
def test_a_tightened_name_limit_refuses_new_names_but_not_old_objects_writes(
    kube: Kube, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    old_name, limit = "trained-before-the-limit-fell", 20
    assert limit < len(old_name) <= crds.MAX_TRAINING_NAME_LENGTH
    create(kube, namespace, TRAINING, old_name, {"image": "t"}, {"phase": "Pending", "attempt": 1})
    monkeypatch.setattr(crds, "MAX_TRAINING_NAME_LENGTH", limit)
    tightened = crds.training_crd()
    install(kube, tightened, tmp_path / "tightened")

    new_name = old_name.replace("trained", "created")
    said = wait_for(
        lambda: refused(lambda: dry_run_training(kube, namespace, new_name, {"image": "t"})),
        what=f"a new training named over {limit} characters refused",
    )
    assert f"metadata.name must be at most {limit} characters" in said
    # The object named under the old limit still takes the operator's status and a mutable spec change.
    assert patch_status(kube, namespace, TRAINING, old_name, {"phase": "Running"})["status"]["phase"] == "Running"
    assert patch_spec(kube, namespace, TRAINING, old_name, {"maxRetries": 5})["spec"]["maxRetries"] == 5

    # Without the create-only guard, the same tightened rule locks the old object's status out.
    install(kube, without_create_only_guard(tightened), tmp_path / "unguarded")
    said = wait_for(
        lambda: refused(lambda: patch_status(kube, namespace, TRAINING, old_name, {"phase": "Succeeded"})),
        what="the unguarded rule refusing the old object's status write",
    )
    assert f"metadata.name must be at most {limit} characters" in said
