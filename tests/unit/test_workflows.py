"""The GitHub workflows, checked with actionlint (built by hack/tools.sh): a broken workflow fails
here rather than on the push or tag that runs it. shellcheck and pyflakes are left out of
actionlint's checks (``-shellcheck= -pyflakes=``), so the result is the same on a machine with or
without them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def _lint(actionlint: Path, *files: Path) -> subprocess.CompletedProcess:
    command = [str(actionlint), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def test_every_workflow_passes_actionlint(actionlint: Path):
    workflows = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {w.name for w in workflows} >= {"release.yaml", "test-kind.yaml", "gpu-images.yaml"}
    linted = _lint(actionlint, *workflows)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_a_broken_workflow_fails_naming_its_line(actionlint: Path, tmp_path: Path):
    broken = tmp_path / ".github" / "workflows" / "release.yaml"
    broken.parent.mkdir(parents=True)
    shutil.copy(WORKFLOWS / "release.yaml", broken)
    text = broken.read_text()
    assert "${{ github.ref_name }}" in text
    broken.write_text(text.replace("${{ github.ref_name }}", "${{ github.ref_nam }}", 1))
    linted = _lint(actionlint, broken)
    assert linted.returncode == 1
    assert 'property "ref_nam" is not defined in object type' in linted.stdout, linted.stdout


def test_the_release_runs_the_dry_runs_steps_with_least_privilege():
    """The workflow and `make release-dry-run` share hack/release.py; only the release job may write,
    and only the release, the packages and an OIDC token for keyless signing."""
    workflow = yaml.safe_load((WORKFLOWS / "release.yaml").read_text())
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as true
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["permissions"] == {"contents": "write", "packages": "write", "id-token": "write"}
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert 'python -m hack.release "$REGISTRY" --keyless --require-all' in runs
    assert "$(PY) -m hack.release" in (ROOT / "Makefile").read_text()


def test_every_action_is_pinned_by_commit_with_its_version_beside_it():
    """A tag can be moved to other code; a commit cannot. Each `uses:` names a full commit SHA and,
    in a comment, the release it is (what a reader and Dependabot go by)."""
    pinned = re.compile(r"^\s*(?:- )?uses: [\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")
    uses = [
        (workflow.name, line.strip())
        for workflow in sorted(WORKFLOWS.glob("*.y*ml"))
        for line in workflow.read_text().splitlines()
        if re.match(r"^\s*(?:- )?uses:", line)
    ]
    assert len(uses) >= 10
    assert [use for use in uses if not pinned.match(use[1])] == []


def test_every_workflow_reads_at_most_unless_a_job_says_more():
    for workflow in sorted(WORKFLOWS.glob("*.y*ml")):
        assert yaml.safe_load(workflow.read_text())["permissions"] in ({}, {"contents": "read"}), workflow.name
