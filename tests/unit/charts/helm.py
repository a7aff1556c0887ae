"""`helm` of the cluster's version (hack/tools.sh builds it) for the chart tests: render and lint,
no cluster needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.localcluster import default_bin_dir
from tests.support.prerequisite import missing

ROOT = Path(__file__).resolve().parents[3]
CHARTS = ROOT / "charts"
OPERATOR_CHART = CHARTS / "soundmind-operator"
SERVING_CHART = CHARTS / "soundmind-serving"


def helm_binary() -> str:
    found = default_bin_dir() / "helm"
    if os.access(found, os.X_OK):
        return str(found)
    if shutil.which("helm"):
        return shutil.which("helm")
    missing("helm is missing: run hack/tools.sh (make tools)")


def helm(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def build_dependencies() -> None:
    """Pack charts/soundmind-crds into the operator chart's charts/ (from the checkout, no network)."""
    helm("dependency", "build", str(OPERATOR_CHART), "--skip-refresh")


def template(chart: Path, *values: str, release: str = "test", namespace: str = "soundmind-system") -> list[dict]:
    out = helm("template", release, str(chart), "--namespace", namespace, *values).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]
