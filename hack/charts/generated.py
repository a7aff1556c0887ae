"""Every generated chart file and its text, keyed by path."""

from __future__ import annotations

import json
from pathlib import Path

from hack.charts import alerts, dashboards, serving_schema

ROOT = Path(__file__).resolve().parents[2]
SERVING_CHART = ROOT / "charts" / "soundmind-serving"
OPERATOR_CHART = ROOT / "charts" / "soundmind-operator"
RULES_FILE = OPERATOR_CHART / "rules" / "soundmind.rules.yaml"
DASHBOARD_DIR = OPERATOR_CHART / "dashboards"


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[Path, str]:
    files = {SERVING_CHART / "values.schema.json": _json(serving_schema.values_schema()), RULES_FILE: alerts.render()}
    for name in dashboards.DASHBOARDS:
        files[DASHBOARD_DIR / f"{name}.json"] = dashboards.render(name)
    return files
