"""A spec the CRD admits but whose child the API server refuses (HTTP 422) fails the object once,
naming the field, instead of failing every pass with nothing in its status (no cluster)."""

import json
import logging

from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry

from soundmind_operator import metrics
from soundmind_operator.cache import Owned
from soundmind_operator.kube import Invalid, Kube
from soundmind_operator.training.reconcile import TrainingReconciler

REFUSAL = (
    'Job.batch "bad-a1" is invalid: spec.template.spec.nodeSelector: Invalid value: "ü": name part must '
    "consist of alphanumeric characters, '-', '_' or '.'"
)


class RefusingKube(Kube):
    """Every write of a child is refused as the API server refuses an invalid one; status writes are kept."""

    def __init__(self):
        super().__init__(api=None)
        self.status_patches: list[dict] = []

    def request(self, method, path, body=None, *, content_type="application/json", query=None):
        if path.endswith("/status"):
            self.status_patches.append(body)
            return {"metadata": {"resourceVersion": "2"}}
        error = ApiException(status=422, reason="Unprocessable Entity")
        error.body = json.dumps({"kind": "Status", "message": REFUSAL, "reason": "Invalid", "code": 422})
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
    outcome = reconciler.reconcile(training(), Owned(), logging.getLogger("test"))
    assert outcome.settled
    (patch,) = kube.status_patches
    assert patch["status"]["phase"] == "Failed"
    (failed,) = patch["status"]["conditions"]
    assert failed["reason"] == "InvalidSpec" and "spec.template.spec.nodeSelector" in failed["message"]
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]

    again = reconciler.reconcile(training("Failed"), Owned(), logging.getLogger("test"))
    assert again.settled and len(kube.status_patches) == 1, "a failed training is not written again"


def test_a_422_is_invalid_with_the_api_servers_message():
    kube = RefusingKube()
    try:
        kube.apply("ns", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    except Invalid as error:
        assert "spec.template" in str(error)
    else:
        raise AssertionError("422 is Invalid")
