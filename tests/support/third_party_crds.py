"""Third-party CRDs (KEDA, prometheus-operator) for the integration tests, from the projects' own Go modules.

The pins (module, version, directory of CRD files) live in hack/third-party-crds.txt, which
hack/tools.sh reads too: `make tools` warms the same cache, so `make test` needs no network for them.
:func:`crd_dir` runs ``go mod download -json <module>@<version>`` (the Go module proxy, checked against
the checksum database) once and copies just the CRD YAML files to
``<cache>/crds/<project>-<version>/``; later calls only read that directory.

When the files cannot be had (no Go, no network), :func:`crd_dir` fails with the reason under
``CI=true`` and skips the test elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.localcluster import default_cache_dir
from tests.support.prerequisite import in_ci, missing

PINS_FILE = Path(__file__).resolve().parents[2] / "hack" / "third-party-crds.txt"
DOWNLOAD_TIMEOUT_SECONDS = 600


class ThirdPartyCRDError(RuntimeError):
    """A project's CRD files could not be fetched; the message says which module and why."""


@dataclass(frozen=True)
class Pin:
    project: str
    module: str
    version: str
    subdir: str  # the module's directory of CRD YAML files

    @property
    def cache_dir(self) -> Path:
        return default_cache_dir() / "crds" / f"{self.project}-{self.version}"


def _read_pins(path: Path = PINS_FILE) -> dict[str, Pin]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            pin = Pin(*line.split())
            pins[pin.project] = pin
    return pins


PINS = _read_pins()


def crd_dir(project: str) -> Path:
    """The directory of ``project``'s CRD YAML files (a key of :data:`PINS`), downloaded on first use."""
    pin = PINS[project]
    if not pin.cache_dir.is_dir():
        try:
            _download(pin)
        except ThirdPartyCRDError as error:
            if in_ci():
                raise
            missing(str(error))
    return pin.cache_dir


class KubeYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: these files are megabytes
    """yaml.safe_load as Kubernetes reads YAML: a plain ``=`` (in prometheus-operator's CRDs) is the
    string "=", not YAML 1.1's "value" tag, which PyYAML resolves but cannot construct."""


KubeYamlLoader.add_constructor("tag:yaml.org,2002:value", KubeYamlLoader.construct_scalar)


def crds(project: str) -> list[dict]:
    """``project``'s CustomResourceDefinitions, parsed, in file-name order."""
    return [yaml.load(path.read_text(), Loader=KubeYamlLoader) for path in sorted(crd_dir(project).glob("*.yaml"))]


def _download(pin: Pin) -> None:
    what = f"{pin.module}@{pin.version}"
    if shutil.which("go") is None:
        raise ThirdPartyCRDError(f"{pin.project} CRDs: the Go toolchain is needed to fetch {what} (go mod download)")
    pin.cache_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=pin.cache_dir.parent, prefix=f".{pin.project}-") as work:
        # Outside any module (the temporary directory), so nothing here edits a go.mod.
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto")}
        try:
            done = subprocess.run(
                ["go", "mod", "download", "-json", what],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as error:
            raise ThirdPartyCRDError(f"{pin.project} CRDs: go mod download {what} took over {error.timeout}s") from None
        # On failure -json still prints the module with an "Error" field; stderr may hold more.
        result = json.loads(done.stdout) if done.stdout.strip() else {}
        if done.returncode != 0 or "Error" in result:
            reason = result.get("Error") or done.stderr.strip() or f"exit {done.returncode}"
            raise ThirdPartyCRDError(f"{pin.project} CRDs: go mod download {what} failed: {reason}")
        source = Path(result["Dir"]) / pin.subdir
        files = sorted(source.glob("*.yaml"))
        if not files:
            raise ThirdPartyCRDError(f"{pin.project} CRDs: no *.yaml in {pin.subdir} of {what} ({source})")
        staged = Path(work) / "crds"
        staged.mkdir()
        for path in files:
            shutil.copyfile(path, staged / path.name)  # not copy2: module cache files are read-only
        try:
            staged.rename(pin.cache_dir)
        except OSError:
            if not pin.cache_dir.is_dir():  # else a concurrent caller got there first, with the same files
                raise
