"""Every generated chart file and its text, keyed by path."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hack.charts import alerts, dashboards, serving_schema
from soundmind.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
SERVING_CHART = ROOT / "charts" / "soundmind-serving"
OPERATOR_CHART = ROOT / "charts" / "soundmind-operator"
RULES_FILE = OPERATOR_CHART / "rules" / "soundmind.rules.yaml"
DASHBOARD_DIR = OPERATOR_CHART / "dashboards"
CHART_FILES = sorted((ROOT / "charts").glob("*/Chart.yaml"))
# The chart's own version and appVersion (top level), and the version of each dependency on one of
# our charts (indented, under a `- name: soundmind-...` entry): Helm reads them from the file, so
# they are written from soundmind/version.py rather than read from it.
_CHART_VERSION = re.compile(r'^(version: |appVersion: ")[^"\n]*', re.M)
_DEPENDENCY_VERSION = re.compile(r"^(  - name: soundmind-[a-z-]+\n(?:    [^\n]*\n)*?    version: )\S+", re.M)


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def chart_file(path: Path) -> str:
    """Chart.yaml as it is, with every version of ours set to the project's (VERSION)."""
    text = _CHART_VERSION.sub(lambda m: m.group(1) + VERSION, path.read_text())
    return _DEPENDENCY_VERSION.sub(lambda m: m.group(1) + VERSION, text)


def render_all() -> dict[Path, str]:
    files = {SERVING_CHART / "values.schema.json": _json(serving_schema.values_schema()), RULES_FILE: alerts.render()}
    files |= {path: chart_file(path) for path in CHART_FILES}
    for name in dashboards.DASHBOARDS:
        files[DASHBOARD_DIR / f"{name}.json"] = dashboards.render(name)
    return files
