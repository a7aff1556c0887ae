"""The third-party CRDs the integration tests install are the ones the serving operator creates
objects of, as real CustomResourceDefinitions from the pinned modules."""

import pytest

from tests.support import third_party_crds

EXPECTED = {
    "keda": {
        "scaledobjects.keda.sh",
        "scaledjobs.keda.sh",
        "triggerauthentications.keda.sh",
        "clustertriggerauthentications.keda.sh",
        "cloudeventsources.eventing.keda.sh",
        "clustercloudeventsources.eventing.keda.sh",
    },
    "prometheus-operator": {
        "alertmanagerconfigs.monitoring.coreos.com",
        "alertmanagers.monitoring.coreos.com",
        "podmonitors.monitoring.coreos.com",
        "probes.monitoring.coreos.com",
        "prometheusagents.monitoring.coreos.com",
        "prometheuses.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "scrapeconfigs.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
        "thanosrulers.monitoring.coreos.com",
    },
}
# The kinds and versions the serving operator writes.
USED = {("keda", "ScaledObject", "v1alpha1"), ("prometheus-operator", "ServiceMonitor", "v1")}


def test_every_pinned_project_is_checked():
    assert set(third_party_crds.PINS) == set(EXPECTED)


@pytest.mark.parametrize("project", sorted(EXPECTED))
def test_crd_files_are_the_projects_crds(project):
    crds = third_party_crds.crds(project)
    for crd in crds:
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1" and crd["kind"] == "CustomResourceDefinition"
        names = crd["spec"]["names"]
        assert crd["metadata"]["name"] == f"{names['plural']}.{crd['spec']['group']}"
        assert any(version["served"] and version["storage"] for version in crd["spec"]["versions"])
    assert {crd["metadata"]["name"] for crd in crds} == EXPECTED[project]


@pytest.mark.parametrize(("project", "kind", "version"), sorted(USED))
def test_the_kinds_we_create_are_served(project, kind, version):
    (crd,) = [crd for crd in third_party_crds.crds(project) if crd["spec"]["names"]["kind"] == kind]
    assert version in {v["name"] for v in crd["spec"]["versions"] if v["served"]}


@pytest.fixture
def unfetchable(monkeypatch, tmp_path):
    """A pinned project whose CRDs are not cached and cannot be fetched (no Go on PATH)."""
    monkeypatch.setenv("SOUNDMIND_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    pin = third_party_crds.Pin("nowhere", "example.com/m", "v1.0.0", "crds")
    monkeypatch.setitem(third_party_crds.PINS, pin.project, pin)
    return pin.project


def test_in_ci_an_unfetchable_project_fails_with_the_reason(monkeypatch, unfetchable):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(third_party_crds.ThirdPartyCRDError, match=r"nowhere CRDs: the Go toolchain is needed"):
        third_party_crds.crd_dir(unfetchable)


def test_outside_ci_an_unfetchable_project_skips(monkeypatch, unfetchable):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="example.com/m@v1.0.0"):
        third_party_crds.crd_dir(unfetchable)
