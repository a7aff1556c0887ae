"""Every generated chart file and its text, keyed by path."""

from __future__ import annotations

import json
from pathlib import Path

from hack.charts import serving_schema

ROOT = Path(__file__).resolve().parents[2]
SERVING_CHART = ROOT / "charts" / "soundmind-serving"
OPERATOR_CHART = ROOT / "charts" / "soundmind-operator"


def _json(document: object) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[Path, str]:
    return {SERVING_CHART / "values.schema.json": _json(serving_schema.values_schema())}
