"""Both charts on the real API server: the rendered manifests pass its dry-run, `helm install` and
`helm upgrade` leave the objects present and Ready, the operator run with exactly the chart's
ServiceAccount reconciles a training and a serving (installed with the serving chart), that identity
cannot read Secrets nor touch what it does not own, and a bad value is refused before anything exists.

The release is not named `soundmind-operator`: other modules' operator fixture applies config/rbac
under those names, and Helm refuses objects it does not own.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from soundmind.api.base import GROUP, VERSION
from soundmind.api.training import TRAINING
from tests.support import operator as op
from tests.support import sim, third_party_crds
from tests.support.kube import Kube, read_or_none
from tests.support.poll import wait_for
from tests.unit.charts.helm import OPERATOR_CHART, SERVING_CHART, build_dependencies, helm

pytestmark = pytest.mark.integration

RELEASE = "charts-test"
RELEASE_NAMESPACE = "soundmind-charts"
FULLNAME = f"{RELEASE}-soundmind-operator"
IDENTITY = f"system:serviceaccount:{RELEASE_NAMESPACE}:{FULLNAME}"
SOUNDMIND_CRDS = ("soundmindtrainings.soundmind.ai", "soundmindservings.soundmind.ai")
# kwok runs no containers: the operator pod is placed on a simulated node, which reports it Ready.
_ESCAPED_NODE_LABEL = sim.MANAGED_NODE_LABEL.replace(".", "\\.")  # helm --set splits keys at dots
ON_SIMULATED_NODES = ["--set-string", f"nodeSelector.{_ESCAPED_NODE_LABEL}=true"]
MONITORING = ["--set", "metrics.serviceMonitor.enabled=true,metrics.trainerPodMonitor.enabled=true"]
ALERTS = ["--set", "prometheusRule.enabled=true"]


def kube_helm(kube: Kube, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm(*args, "--kubeconfig", str(kube.kubeconfig), check=check)


def adopt_crds(kube: Kube) -> None:
    """CRDs applied by kubectl elsewhere in the session become this release's (Helm's adoption path)."""
    for name in SOUNDMIND_CRDS:
        if kube.kubectl("get", "crd", name, check=False).returncode == 0:
            kube.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
            kube.kubectl(
                "annotate",
                "--overwrite",
                "crd",
                name,
                f"meta.helm.sh/release-name={RELEASE}",
                f"meta.helm.sh/release-namespace={RELEASE_NAMESPACE}",
            )


@pytest.fixture(scope="module")
def release(kube: Kube) -> Iterator[str]:
    build_dependencies()
    op.install_crds(kube, third_party_crds.crd_dir("prometheus-operator"))
    adopt_crds(kube)
    kube_helm(
        kube,
        "install", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        *ON_SIMULATED_NODES, *MONITORING, *ALERTS, "--wait", "--timeout", "120s",
    )  # fmt: skip
    yield RELEASE
    kube_helm(kube, "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)
    kube.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)


def test_rendered_charts_pass_the_api_servers_dry_run(kube: Kube, namespace: str):
    build_dependencies()
    op.install_crds(kube, third_party_crds.crd_dir("prometheus-operator"))
    rendered = helm(
        "template", "dry", str(OPERATOR_CHART), "--namespace", namespace, *MONITORING, *ALERTS,
        "--set", f"operator.watchNamespaces={{{namespace}}}", "--set", "crds.enabled=false",
    ).stdout  # fmt: skip
    rendered += "\n---\n" + helm("template", "serving", str(SERVING_CHART), "-n", namespace, "--set", "model=m").stdout
    op.install_crds(kube)  # the SoundMindServing needs its CRD to be validated
    result = subprocess.run(
        [str(kube.kubectl_path), "--kubeconfig", str(kube.kubeconfig), "apply", "--dry-run=server", "-f", "-"],
        input=rendered, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for kind in ("deployment.apps", "clusterrole", "rolebinding", "servicemonitor", "podmonitor", "prometheusrule"):
        assert kind in result.stdout, result.stdout
    assert "soundmindserving.soundmind.ai/serving" in result.stdout


def test_install_leaves_everything_present_and_ready(kube: Kube, release: str):
    deployment = kube.apps_v1.read_namespaced_deployment(FULLNAME, RELEASE_NAMESPACE)
    assert deployment.status.ready_replicas == 1 and deployment.spec.strategy.type == "Recreate"
    for name in SOUNDMIND_CRDS:
        crd = kube.apiextensions_v1.read_custom_resource_definition(name)
        assert crd.metadata.annotations["meta.helm.sh/release-name"] == RELEASE  # upgraded with the release
        assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    listed = kube.kubectl(
        "get", "-n", RELEASE_NAMESPACE, "servicemonitor,podmonitor,prometheusrule,configmap,svc", "-o", "name"
    ).stdout
    for name in (
        f"servicemonitor.monitoring.coreos.com/{FULLNAME}",
        f"podmonitor.monitoring.coreos.com/{FULLNAME}-trainers",
        f"prometheusrule.monitoring.coreos.com/{FULLNAME}",
        f"configmap/{FULLNAME}-dashboard-training",
        f"service/{FULLNAME}-metrics",
    ):
        assert name in listed


def test_upgrade_rolls_the_operator_and_keeps_the_crds(kube: Kube, release: str):
    kube_helm(
        kube, "upgrade", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE, "--reuse-values",
        "--set", "operator.resyncSeconds=5", "--wait", "--timeout", "120s",
    )  # fmt: skip
    status = json.loads(kube_helm(kube, "status", RELEASE, "-n", RELEASE_NAMESPACE, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    deployment = kube.apps_v1.read_namespaced_deployment(FULLNAME, RELEASE_NAMESPACE)
    assert "--resync-seconds=5" in deployment.spec.template.spec.containers[0].args
    wait_for(
        lambda: (kube.apps_v1.read_namespaced_deployment(FULLNAME, RELEASE_NAMESPACE).status.ready_replicas or 0) == 1,
        timeout=60,
        what="the upgraded operator pod Ready",
    )
    manifest = kube_helm(kube, "get", "manifest", RELEASE, "-n", RELEASE_NAMESPACE).stdout
    assert all(f"name: {name}" in manifest for name in SOUNDMIND_CRDS)


def can(kube: Kube, verb: str, resource: str, namespace: str | None = None) -> bool:
    scope = ["-n", namespace] if namespace else []
    result = kube.kubectl("auth", "can-i", verb, resource, f"--as={IDENTITY}", *scope, check=False)
    return result.stdout.strip() == "yes"


def test_chart_identity_cannot_read_secrets_or_touch_what_it_does_not_own(kube: Kube, release: str):
    assert can(kube, "create", "jobs.batch", "anywhere")  # the rules are bound
    for verb in ("get", "list", "watch"):
        assert not can(kube, verb, "secrets", "anywhere")
    for verb, resource in [
        ("delete", "deployments.apps"),
        ("delete", "services"),
        ("update", "configmaps"),
        ("delete", "soundmindtrainings.soundmind.ai"),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("patch", "nodes"),
        ("delete", "pods"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
    ]:
        assert not can(kube, verb, resource, "anywhere"), f"{IDENTITY} may {verb} {resource}"


def test_operator_with_the_charts_identity_reconciles_a_training_and_a_serving(
    kube: Kube, release: str, namespace: str, tmp_path: Path
):
    op.create_volumes(kube, namespace)
    kubeconfig = wait_for(
        lambda: read_or_none(
            lambda: op.service_account_kubeconfig(kube, tmp_path / "chart.kubeconfig", RELEASE_NAMESPACE, FULLNAME)
        ),
        timeout=30,
        what="a token for the chart's ServiceAccount",
    )
    operator = op.OperatorProcess(kubeconfig, tmp_path / "operator.log").start()
    try:
        kube.custom_objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, TRAINING.plural,
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SoundMindTraining", "metadata": {"name": "alr-grpo"},
             "spec": {"image": "registry.invalid/soundmind/trainer:sim"}},
        )  # fmt: skip
        kube_helm(
            kube, "install", "serving", str(SERVING_CHART), "-n", namespace, "--set", "model=Qwen/Qwen2.5-Omni-7B",
            "--set", "image=registry.invalid/soundmind/server:sim,autoscaling.enabled=false",
            "--set-string", "resources.cpu=1,resources.memory=1Gi",
        )  # fmt: skip
        wait_for(
            lambda: read_or_none(lambda: kube.batch_v1.read_namespaced_job("alr-grpo-a1", namespace)),
            timeout=60,
            what=f"the training's Job (operator log: {operator.log_path})",
        )
        wait_for(
            lambda: read_or_none(lambda: kube.apps_v1.read_namespaced_deployment("serving", namespace)),
            timeout=60,
            what=f"the serving's Deployment (operator log: {operator.log_path})",
        )
        assert "Forbidden" not in operator.log_path.read_text()
        assert f'soundmind_serving_replicas_max{{namespace="{namespace}",serving="serving"}} 1.0' in operator.metrics()
    finally:
        kube_helm(kube, "uninstall", "serving", "-n", namespace, check=False)
        operator.stop()


def test_a_bad_value_is_refused_before_anything_is_installed(kube: Kube, namespace: str):
    result = kube_helm(
        kube, "install", "bad", str(SERVING_CHART), "-n", namespace, "--set", "model=m", "--set", "replicas=-1",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "/replicas" in result.stderr
    assert kube_helm(kube, "status", "bad", "-n", namespace, check=False).returncode != 0
    assert not kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, "soundmindservings")[
        "items"
    ]
