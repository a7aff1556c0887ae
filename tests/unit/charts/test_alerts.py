"""`promtool check rules` and `promtool test rules` on the generated alert rules: every alert has a
case where it fires and one where it stays silent (tests/promtool/soundmind.rules.test.yaml)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from hack.charts import generated
from tests.support.prerequisite import missing

TESTS = Path(__file__).resolve().parents[2] / "promtool" / "soundmind.rules.test.yaml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    missing("promtool is missing: hack/apt.sh installs Debian's prometheus")


def rules() -> dict[str, dict]:
    file = yaml.safe_load(generated.RULES_FILE.read_text())
    return {rule["alert"]: rule for group in file["groups"] for rule in group["rules"]}


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """Prometheus' expansion of `{{ $labels.x }}` and `{{ $value }}` (Go prints floats shortest-first)."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.replace("{{ $value }}", format(value, "g") if value != int(value) else str(int(value)))


def test_check_rules():
    result = subprocess.run([promtool(), "check", "rules", str(generated.RULES_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_fires_and_stays_silent_where_it_should(tmp_path: Path):
    cases = yaml.safe_load(TESTS.read_text())  # series values are quoted: YAML reads 0x30 as hex
    by_name = rules()
    fired, silent = set(), set()
    for test in cases["tests"]:
        for check in test["alert_rule_test"]:
            rule = by_name[check["alertname"]]
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
            for alert in check["exp_alerts"]:
                labels = {k: str(v) for k, v in alert["exp_labels"].items()}
                value = float(alert.pop("value"))
                alert["exp_annotations"] = {
                    key: expand(text, labels, value) for key, text in rule["annotations"].items()
                }
    assert fired == silent == set(by_name), f"fires: {sorted(fired)}, silent: {sorted(silent)}"
    cases["rule_files"] = [str(generated.RULES_FILE)]
    unit = tmp_path / "soundmind.rules.test.yaml"
    unit.write_text(yaml.safe_dump(cases, sort_keys=False))
    result = subprocess.run([promtool(), "test", "rules", str(unit)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
