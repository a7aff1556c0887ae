"""A spec the CRD admits but whose child the API server refuses (HTTP 422) fails the object once,
naming the field, instead of failing every pass with nothing in its status (no cluster)."""

import json
import logging

import pytest
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry

from soundmind_operator import metrics
from soundmind_operator.cache import Owned
from soundmind_operator.kube import Invalid, Kube
from soundmind_operator.training.reconcile import TrainingCache, TrainingReconciler

REFUSAL = (
    'Job.batch "bad-a1" is invalid: spec.template.spec.nodeSelector: Invalid value: "ü": name part must '
    "consist of alphanumeric characters, '-', '_' or '.'"
)


class RefusingKube(Kube):
    """Every write of a child is refused as the API server refuses an invalid one (or with `status`
    and `message`); status writes are kept."""

    def __init__(self, status: int = 422, message: str = REFUSAL):
        super().__init__(api=None)
        self.status, self.message = status, message
        self.status_patches: list[dict] = []

    def request(self, method, path, body=None, *, content_type="application/json", query=None):
        if path.endswith("/status"):
            self.status_patches.append(body)
            return {"metadata": {"resourceVersion": "2"}}
        error = ApiException(status=self.status, reason="Refused")
        error.body = json.dumps({"kind": "Status", "message": self.message, "code": self.status})
        raise error


def training(phase=None) -> dict:
    return {
        "metadata": {"name": "bad", "namespace": "ns", "resourceVersion": "1", "generation": 1, "uid": "u"},
        "spec": {"image": "registry.invalid/x", "resources": {"nodeSelector": {"ü": "x"}}},
        "status": {"phase": phase} if phase else {},
    }


def test_a_refused_child_fails_the_training_once_naming_the_field():
    kube = RefusingKube()
    reconciler = TrainingReconciler(kube, metrics.OperatorMetrics(CollectorRegistry()))
    outcome = reconciler.reconcile(training(), TrainingCache(Owned()), logging.getLogger("test"))
    assert outcome.settled
    (patch,) = kube.status_patches
    assert patch["status"]["phase"] == "Failed"
    (failed,) = patch["status"]["conditions"]
    assert failed["reason"] == "InvalidSpec" and "spec.template.spec.nodeSelector" in failed["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]

    again = reconciler.reconcile(training("Failed"), TrainingCache(Owned()), logging.getLogger("test"))
    assert again.settled and len(kube.status_patches) == 1, "a failed training is not written again"


@pytest.mark.parametrize(
    ("status", "message", "for_good"),
    [
        (422, REFUSAL, True),
        # The Priority admission plugin (a training's PodGroup; found by the fuzzed-specs test).
        (403, 'podgroups.scheduling.k8s.io "t-a1" is forbidden: no PriorityClass with name hihg was found', True),
        # The operator's own permissions, or a quota: not the spec's fault, and they may change.
        (403, 'jobs.batch is forbidden: User "system:serviceaccount:x:y" cannot create resource "jobs"', False),
        (403, 'pods "t-a1-0" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=8', False),
    ],
)
def test_what_the_api_server_refuses_for_good_is_invalid_with_its_message(status: int, message: str, for_good: bool):
    kube = RefusingKube(status, message)
    with pytest.raises(Invalid if for_good else ApiException) as refused:
        kube.apply("ns", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    if for_good:
        assert str(refused.value) == message
