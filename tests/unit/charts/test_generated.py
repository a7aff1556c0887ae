"""The charts' generated files (serving values schema, dashboards, alert rules) are what the
generators make now, and the dashboards are valid to Grafana's own SDK."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from hack.charts import alerts, dashboards, generated
from soundmind.api import vllm_metrics
from soundmind.train import metrics as train_metrics
from soundmind_operator import metrics as operator_metrics
from tests.unit.charts.helm import ROOT

DASHBOARD_FILES = sorted(generated.DASHBOARD_DIR.glob("*.json"))
KNOWN_NAMES = {
    value
    for module in (vllm_metrics, train_metrics, operator_metrics)
    for value in vars(module).values()
    if isinstance(value, str) and re.fullmatch(r"(vllm:|soundmind_)[a-z0-9_:]+", value)
}


def test_committed_files_match_the_generators():
    result = subprocess.run(
        [sys.executable, "-m", "hack.charts", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_three_dashboards():
    assert [p.stem for p in DASHBOARD_FILES] == ["operator", "serving", "training"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboard_is_valid_to_the_sdk(path):
    document = json.loads(path.read_text())
    parsed = Dashboard.from_json(document)
    assert json.loads(json.dumps(parsed, cls=JSONEncoder)) == document
    assert document["uid"] == f"soundmind-{path.stem}"


@pytest.mark.parametrize("name", ["training", "serving"])
def test_dashboards_filter_by_namespace_and_object(name):
    variables = [v.name for v in dashboards.DASHBOARDS[name]().build().templating.list_val]
    assert variables == ["datasource", "namespace", name]


def _series_names(expr: str) -> set[str]:
    names = set(re.findall(r"(vllm:[a-z0-9_:]+|soundmind_[a-z0-9_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_every_queried_metric_is_a_named_metric():
    """Queries name metrics only through the name modules: an unknown name is a typo or a rename."""
    exprs = [
        t["expr"]
        for p in DASHBOARD_FILES
        for panel in json.loads(p.read_text())["panels"]
        for t in panel.get("targets", [])
    ]
    exprs += [rule["expr"] for group in alerts.rule_file()["groups"] for rule in group["rules"]]
    unknown = {name for expr in exprs for name in _series_names(expr)} - KNOWN_NAMES
    assert not unknown


def test_every_alert_has_a_runbook_summary_and_severity():
    for group in alerts.rule_file()["groups"]:
        for rule in group["rules"]:
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
            assert rule["labels"]["severity"] in ("info", "warning", "critical")
