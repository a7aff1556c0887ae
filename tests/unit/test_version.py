"""One version everywhere: the package, `soundmind --version`, the charts' version and appVersion
(and the operator chart's dependency on the CRD chart and its lock), the images the charts and CRDs
default to. soundmind/version.py is the one place; `python -m hack.charts --write` writes it into the
Chart.yaml files, and this test fails naming whatever drifted."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
import yaml

from soundmind.api.serving import ServingSpec
from soundmind.api.training import TrainingSpec
from soundmind.version import OPERATOR_IMAGE, SERVER_IMAGE, TRAINER_IMAGE, VERSION
from tests.unit.charts.helm import CHARTS, OPERATOR_CHART, ROOT

CHART_NAMES = ["soundmind-crds", "soundmind-operator", "soundmind-serving"]


def test_version_is_semver():
    assert VERSION.count(".") == 2 and all(part.isdigit() for part in VERSION.split("."))


def test_package_version_is_read_from_version_py():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "soundmind.version.VERSION"}


def test_cli_version():
    done = subprocess.run([sys.executable, "-m", "soundmind", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, f"soundmind {VERSION}")


@pytest.mark.parametrize("name", CHART_NAMES)
def test_chart_version_and_app_version(name):
    chart = yaml.safe_load((CHARTS / name / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION), (
        f"charts/{name}/Chart.yaml: run python -m hack.charts --write"
    )


def test_operator_chart_depends_on_this_crd_chart():
    chart = yaml.safe_load((OPERATOR_CHART / "Chart.yaml").read_text())
    lock = yaml.safe_load((OPERATOR_CHART / "Chart.lock").read_text())
    for dependencies in (chart["dependencies"], lock["dependencies"]):
        assert [(d["name"], d["version"]) for d in dependencies] == [("soundmind-crds", VERSION)], (
            "run python -m hack.charts --write, then helm dependency update charts/soundmind-operator"
        )


def test_default_images_are_tagged_with_the_version():
    assert {OPERATOR_IMAGE, SERVER_IMAGE, TRAINER_IMAGE} == {
        f"ghcr.io/soundmind-ai/soundmind-{name}:{VERSION}" for name in ("operator", "server", "trainer")
    }
    assert ServingSpec.model_fields["image"].default == SERVER_IMAGE
    assert TrainingSpec.model_fields["image"].default == TRAINER_IMAGE
    values = yaml.safe_load((OPERATOR_CHART / "values.yaml").read_text())
    # An empty tag is the chart's appVersion (the operator chart's _helpers.tpl).
    assert f"{values['image']['repository']}:{values['image']['tag'] or VERSION}" == OPERATOR_IMAGE
