"""The API server's own count of one identity's reads, which benchmarks/operator_bench.py judges
"no GET or LIST by the operator" by (tests/support/api_reads.py): it must count that identity's GET
and LIST, and neither its watches nor anyone else's reads."""

from __future__ import annotations

from pathlib import Path

from kubernetes import watch

from tests.support import api_reads
from tests.support import operator as op
from tests.support.kube import Kube

READER = "reader"


def reader_of_config_maps(kube: Kube, namespace: str, tmp_path: Path) -> Kube:
    kube.core_v1.create_namespaced_service_account(namespace, {"metadata": {"name": READER}})
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]
    kube.rbac_v1.create_namespaced_role(namespace, {"metadata": {"name": READER}, "rules": rules})
    kube.rbac_v1.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": READER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER},
            "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": namespace}],
        },
    )
    return Kube.connect(op.service_account_kubeconfig(kube, tmp_path / "reader.kubeconfig", namespace, READER))


def test_the_api_server_counts_one_identitys_gets_and_lists_alone(kube: Kube, namespace: str, tmp_path: Path):
    reader = reader_of_config_maps(kube, namespace, tmp_path)
    schema = api_reads.count_reads_of(kube, namespace, READER)
    try:
        api_reads.wait_counting(kube, reader, schema)
        before = api_reads.reads(kube, schema)
        # Everyone else's reads, and the identity's watch, count nothing.
        kube.core_v1.read_namespaced_config_map("kube-root-ca.crt", namespace)
        kube.core_v1.list_namespaced_config_map(namespace)
        for _ in watch.Watch().stream(reader.core_v1.list_namespaced_config_map, namespace, timeout_seconds=1):
            pass
        assert api_reads.reads(kube, schema) == before
        # Its GET and its LIST count one each.
        reader.core_v1.read_namespaced_config_map("kube-root-ca.crt", namespace)
        reader.core_v1.list_namespaced_config_map(namespace)
        assert api_reads.reads(kube, schema) == before + 2
    finally:
        kube.request("DELETE", f"{api_reads.FLOW_SCHEMAS}/{schema}")
