"""The reads (GET and LIST) that one identity makes, as the API server itself counts them.

kube-apiserver's `apiserver_request_total` has no user label, and a client's own counter sees only
what its code sends (the operator's misses kopf's requests). API Priority and Fairness does classify
requests by who asks: a FlowSchema whose subject is one ServiceAccount and whose rules match only
the read verbs takes exactly that identity's reads, and the server counts every request it
dispatches by flow schema (`apiserver_flowcontrol_dispatched_requests_total{flow_schema}`, BETA).
A watch has the verb `watch` and is not counted. The schema sends them to the priority level that
Kubernetes' own `service-accounts` schema gives every ServiceAccount, so nothing else changes.
"""

from __future__ import annotations

import re
import time

from tests.support.kube import Kube

DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
FLOW_SCHEMAS = "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas"
PRIORITY_LEVEL = "workload-low"
# Before `service-accounts` (9000) and the other suggested schemas that could match a ServiceAccount
# outside kube-system; after `exempt`, `probes` and the system's leader election.
PRECEDENCE = 1000
READ_VERBS = ["get", "list"]


def flow_schema_name(namespace: str, service_account: str) -> str:
    return f"reads-of-{namespace}-{service_account}"


def count_reads_of(kube: Kube, namespace: str, service_account: str) -> str:
    """Install the FlowSchema that counts the ServiceAccount's reads (again: replaced); its name."""
    name = flow_schema_name(namespace, service_account)
    schema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": PRECEDENCE,
            "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {"kind": "ServiceAccount", "serviceAccount": {"namespace": namespace, "name": service_account}}
                    ],
                    "resourceRules": [
                        {
                            "verbs": READ_VERBS,
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "clusterScope": True,
                            "namespaces": ["*"],
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    }
    kube.request("DELETE", f"{FLOW_SCHEMAS}/{name}")
    status, body = kube.request("POST", FLOW_SCHEMAS, schema)
    if status != 201:
        raise RuntimeError(f"FlowSchema {name}: the API server refused it ({status}): {body.decode()[:500]}")
    return name


def dispatched(metrics_text: str, flow_schema: str) -> float:
    """The requests the API server dispatched under `flow_schema`, from its /metrics text (0 before
    the first: the series appears with it)."""
    label = re.compile(rf'[{{,]flow_schema="{re.escape(flow_schema)}"[,}}]')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith(DISPATCHED + "{") and label.search(line)
    )


def reads(kube: Kube, flow_schema: str) -> float:
    """The reads counted under `flow_schema` so far (`kube` must be allowed GET /metrics)."""
    status, body = kube.request("GET", "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: {status} {body.decode()[:300]}")
    return dispatched(body.decode(), flow_schema)


def wait_counting(kube: Kube, as_identity: Kube, flow_schema: str, timeout: float = 30) -> None:
    """Read as the identity until its FlowSchema counts it (the API server applies a new schema
    within a second or so): a count that cannot rise would pass any "no reads" target."""
    before = reads(kube, flow_schema)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        as_identity.request("GET", "/version")
        if reads(kube, flow_schema) > before:
            return
        time.sleep(0.5)
    raise RuntimeError(
        f"FlowSchema {flow_schema} counted none of the identity's reads within {timeout:.0f} s: "
        f"{DISPATCHED} cannot judge its reads"
    )
