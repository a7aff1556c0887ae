"""The operator chart rendered (no cluster): one source of truth for its RBAC and CRDs, the pod as
promised (Recreate, probes, locked down), the values schema refusing bad values by name, and the
dashboards and alerts carried as generated."""

from __future__ import annotations

import json

import pytest
import yaml

from soundmind.version import OPERATOR_IMAGE
from tests.unit.charts.helm import CHARTS, OPERATOR_CHART, ROOT, build_dependencies, helm, of_kind, template

RBAC = ROOT / "config" / "rbac"
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.fixture(scope="module", autouse=True)
def _dependencies() -> None:
    build_dependencies()


def rules_of(path: str, kind: str = "ClusterRole") -> list[list[dict]]:
    return [d["rules"] for d in yaml.safe_load_all((RBAC / path).read_text()) if d and d["kind"] == kind]


def test_lint_strict():
    result = helm("lint", "--strict", str(OPERATOR_CHART))
    assert "0 chart(s) failed" in result.stdout


def test_rbac_rules_are_config_rbac_rules_cluster_wide():
    docs = template(OPERATOR_CHART)
    (role,) = of_kind(docs, "ClusterRole")
    assert [role["rules"]] == rules_of("cluster_role.yaml")
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    (account,) = of_kind(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "soundmind-system"}
    ]
    assert not of_kind(docs, "RoleBinding")


def test_watched_namespaces_get_rolebindings_and_only_nodes_cluster_wide():
    docs = template(OPERATOR_CHART, "--set", "operator.watchNamespaces={team-a,team-b}")
    # Nodes are cluster-scoped: the reference check's node watch needs a cluster-wide grant, of
    # nodes alone (read-only); everything else is granted in the watched namespaces only.
    (cluster_binding,) = of_kind(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["name"]: r["rules"] for r in of_kind(docs, "ClusterRole")}
    assert roles[cluster_binding["roleRef"]["name"]] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}
    ]
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    (deployment,) = of_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_peering_rules_are_config_rbac_peering_rules():
    docs = template(OPERATOR_CHART, "--set", "operator.peering.enabled=true", "--set", "operator.replicas=2")
    roles = {r["metadata"]["name"]: r["rules"] for r in of_kind(docs, "ClusterRole")}
    assert [roles["test-soundmind-operator-peering"]] == rules_of("peering_cluster_role.yaml")
    assert len(of_kind(docs, "ClusterRoleBinding")) == 2
    assert of_kind(docs, "ClusterKopfPeering")[0]["metadata"]["name"] == "soundmind-operator"
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=soundmind-operator" in args


def test_no_rule_reaches_secrets_or_uses_wildcards():
    (role,) = of_kind(template(OPERATOR_CHART), "ClusterRole")
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]


def test_crds_are_the_crd_chart_and_kept_on_uninstall():
    rendered = {d["metadata"]["name"]: d for d in of_kind(template(OPERATOR_CHART), "CustomResourceDefinition")}
    files = {
        d["metadata"]["name"]: d
        for path in sorted((CHARTS / "soundmind-crds" / "templates").glob("*.yaml"))
        for d in [yaml.safe_load(path.read_text())]
    }
    assert rendered == files
    assert all(d["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for d in rendered.values())
    assert not of_kind(template(OPERATOR_CHART, "--set", "crds.enabled=false"), "CustomResourceDefinition")


def test_deployment_is_one_recreated_locked_down_pod_with_probes():
    (deployment,) = of_kind(template(OPERATOR_CHART), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == OPERATOR_IMAGE
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"health": 8080, "metrics": 9090}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "--all-namespaces" in container["args"] and "--metrics-port=9090" in container["args"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (["--set", "operator.logLevel=loud"], "/operator/logLevel"),
        (["--set", "operator.replicas=2"], "/operator/replicas"),
        (["--set", "operator.resyncSeconds=0"], "/operator/resyncSeconds"),
        (["--set", "operator.watchNamespaces={Team_A}"], "/operator/watchNamespaces/0"),
        (["--set", "metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
        (["--set", "metrics.prot=9091"], "'prot'"),
        (["--set", "image.digest=sha256:abc"], "/image/digest"),
        (["--set", f"image.digest={DIGEST.upper()}"], "/image/digest"),
    ],
)
def test_schema_refuses_a_bad_value_naming_it(values: list[str], named: str):
    result = helm("template", "test", str(OPERATOR_CHART), *values, check=False)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def operator_image(*values: str) -> str:
    (deployment,) = of_kind(template(OPERATOR_CHART, *values), "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_digest_pins_the_image_over_the_tag():
    registry = "--set=image.repository=registry.example:5000/soundmind-operator"
    assert operator_image(registry, "--set=image.tag=9.9.9") == "registry.example:5000/soundmind-operator:9.9.9"
    pinned = operator_image(registry, "--set=image.tag=9.9.9", f"--set=image.digest={DIGEST}")
    assert pinned == f"registry.example:5000/soundmind-operator@{DIGEST}"


def test_pull_secrets_reach_the_pod():
    (deployment,) = of_kind(template(OPERATOR_CHART, "--set", "imagePullSecrets[0].name=registry-login"), "Deployment")
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-login"}]


def test_monitors_and_rule_carry_the_generated_files():
    docs = template(
        OPERATOR_CHART,
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.trainerPodMonitor.enabled=true,prometheusRule.enabled=true",
    )
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    (pod_monitor,) = of_kind(docs, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9400
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((OPERATOR_CHART / "rules" / "soundmind.rules.yaml").read_text())


def test_dashboards_are_configmaps_for_grafanas_sidecar():
    docs = template(OPERATOR_CHART, "--set", "dashboards.folder=ML,dashboards.label=my_dashboards")
    maps = {m["metadata"]["name"]: m for m in of_kind(docs, "ConfigMap")}
    assert sorted(maps) == [f"test-soundmind-operator-dashboard-{n}" for n in ("operator", "serving", "training")]
    for configmap in maps.values():
        assert configmap["metadata"]["labels"]["my_dashboards"] == "1"
        assert configmap["metadata"]["annotations"]["grafana_folder"] == "ML"
        (key,) = configmap["data"]
        assert json.loads(configmap["data"][key]) == json.loads((OPERATOR_CHART / "dashboards" / key).read_text())


def test_replicas_zero_installs_everything_but_the_running_operator():
    docs = template(OPERATOR_CHART, "--set", "operator.replicas=0")
    assert of_kind(docs, "Deployment")[0]["spec"]["replicas"] == 0
    assert of_kind(docs, "ClusterRole") and of_kind(docs, "CustomResourceDefinition") and of_kind(docs, "ConfigMap")
