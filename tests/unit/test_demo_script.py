"""`make demo` (hack/demo.sh) ends with the number the paper is about (issue 21, point 7): `soundmind eval`
against a served model through its Service. The demo needs a cluster, so it is run by hand (its
output is in the issue's report); these checks keep its evaluation step wired to what the product
and the image build really provide."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from hack.images.build import IMAGES
from soundmind.api.serving import ServingSpec

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "hack" / "demo.sh"


def _function(name: str) -> str:
    text = DEMO.read_text()
    start = text.index(f"\n{name}() {{")
    return text[start : text.index("\n}\n", start)]


def _variables() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=([\w./-]+)", DEMO.read_text(), re.M))


def test_the_demo_is_valid_bash():
    subprocess.run(["bash", "-n", str(DEMO)], check=True)


def test_the_demo_ends_by_evaluating_then_says_how_to_explore():
    steps = re.search(r"^steps=\((.*)\)$", DEMO.read_text(), re.M).group(1).split()
    assert steps[-2:] == ["step_evaluation", "step_explore"]


def test_the_evaluation_serves_the_stand_in_image_with_a_valid_spec():
    step = _function("step_evaluation")
    manifest_text = re.search(r"<<YAML\n(.*?)\nYAML\n", step, re.S).group(1)
    variables = _variables()
    manifest = yaml.safe_load(re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], manifest_text))
    assert manifest["kind"] == "SoundMindServing" and manifest["metadata"]["name"] == variables["eval_serving"]
    spec = ServingSpec.from_api(manifest["spec"])
    assert spec.image == IMAGES["standin"].tag
    assert "hack.images standin" in step and 'cluster.sh" load-images' in step
    assert spec.resources.node_selector == {"kubernetes.io/hostname": variables["real_node"]}


def test_the_evaluation_asks_the_services_cluster_ip_and_prints_the_reports_figures():
    step = _function("step_evaluation")
    assert 'kubectl get svc "$eval_serving"' in step and "{.spec.clusterIP}" in step
    command = re.search(r"^  soundmind eval (.*?)\|", step, re.M | re.S).group(1)
    assert '--endpoint "http://$cluster_ip:8000"' in command and "--model soundmind" in command
    assert "prepared/audio-text/dev.parquet" in command  # what step_workload prepares
    for figure in ("report['accuracy']", "report['format_rate']", "latency['p50']", "latency['p95']"):
        assert figure in step


def test_make_demo_builds_the_stand_in_image_first():
    setup = re.search(r"^setup-demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "images" in setup.split()
