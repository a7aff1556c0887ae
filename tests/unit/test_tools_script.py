"""hack/tools.sh's groups and locks, on a cache whose tools are already "built" (empty executables at
the versions the script pins), so nothing compiles: `later` names exactly the tools make test builds
beside its tests, and each tool has its own lock, so a test waiting for one is not held up by the
build of another."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "tools.sh"
LATER = {"registry", "cosign", "syft", "keda-operator", "keda-adapter"}


def _pins() -> dict[str, str]:
    """The versions tools.sh pins for the tools `later` names (KEDA's is the CRDs' pin)."""
    text = SCRIPT.read_text()
    pins = {m[1].lower(): m[2] for m in re.finditer(r"^([A-Z]+)_VERSION=(\S+)$", text, re.M)}
    keda = next(
        line.split()[2]
        for line in (ROOT / "hack" / "third-party-crds.txt").read_text().splitlines()
        if line.startswith("keda ")
    )
    return {
        **{tool: pins[tool] for tool in ("registry", "cosign", "syft")},
        "keda-operator": keda,
        "keda-adapter": keda,
    }


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A tool cache holding a stand-in binary for each `later` tool."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, version in _pins().items():
        stand_in = bin_dir / f"{tool}-{version}"
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    return tmp_path


def _tools(cache: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SOUNDMIND_CACHE": str(cache)}
    return subprocess.Popen([str(SCRIPT), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(process: subprocess.Popen, timeout: float = 60) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def test_later_links_exactly_the_tools_make_test_builds_beside_its_tests(cache: Path):
    current = Path(_done(_tools(cache, "later")).splitlines()[-1])
    assert current == cache / "bin" / "current"
    assert {link.name for link in current.iterdir()} == LATER
    for link in current.iterdir():
        assert os.readlink(link) == f"../{link.name}-{_pins()[link.name]}"


def test_a_caller_waits_for_the_tool_being_built_and_only_for_it(cache: Path):
    with open(cache / "bin" / ".registry.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another caller building the registry
        waiting = _tools(cache, "registry")
        _done(_tools(cache, "cosign"), timeout=30)  # cosign's lock is free: no wait
        time.sleep(2)
        assert waiting.poll() is None, "hack/tools.sh registry went on while the registry's lock was held"
        assert not (cache / "bin" / "current" / "registry").exists()
    _done(waiting, timeout=30)
    assert os.readlink(cache / "bin" / "current" / "registry") == f"../registry-{_pins()['registry']}"


def test_an_unknown_tool_is_refused_naming_the_tools_and_groups(cache: Path):
    refused = _tools(cache, "kind")
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "no tool 'kind'" in err and "keda-operator" in err and "the groups first, later" in err


def test_a_failed_build_fails_and_links_nothing(tmp_path: Path):
    """A build that fails ends tools.sh with an error, without a "built" line or a current/ link to a
    binary that is not there (locked's `|| status=$?` turns errexit off in the build function, which
    then went on to both). The go command here fails every build."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    go = '#!/bin/sh\ncase "$1" in list) echo v1.37.2 ;; *) echo "fake go: $*" >&2; exit 1 ;; esac\n'
    (fake / "go").write_text(go)
    (fake / "go").chmod(0o755)
    env = {**os.environ, "SOUNDMIND_CACHE": str(tmp_path), "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run([str(SCRIPT), "actionlint"], env=env, capture_output=True, text=True, timeout=60)
    assert "fake go: install" in done.stderr
    assert done.returncode != 0, done.stderr
    assert "built actionlint" not in done.stderr
    assert not os.path.lexists(tmp_path / "bin" / "current" / "actionlint")
