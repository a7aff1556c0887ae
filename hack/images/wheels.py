"""The wheels an image installs, fetched here, by this machine's pip with its own index, proxy and
trust settings, so that the image build itself needs no network and carries none of them.

All images share one pool of wheels under the cache (the trainer's and the server's CUDA wheels are
gigabytes, and the same); pip fills in only the pins the pool lacks (``pip wheel``, which also builds
the few sdist-only packages, antlr4-python3-runtime for one). Every wheel must fit the images'
platform: CPython 3.11 on x86_64 Linux with bookworm's glibc; one that does not (filled on another
kind of machine) stops the build, named. Wheels no build has used for a month are pruned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYTHON = (3, 11)
GLIBC = (2, 36)  # Debian bookworm's, the images' base
ARCH = "x86_64"
UNUSED_DAYS = 30


class WheelError(RuntimeError):
    pass


def _platforms() -> list[str]:
    manylinux = [f"manylinux_{GLIBC[0]}_{minor}_{ARCH}" for minor in range(GLIBC[1], 4, -1)]
    legacy = [f"{name}_{ARCH}" for name in ("manylinux2014", "manylinux2010", "manylinux1")]
    return [*manylinux, *legacy, f"linux_{ARCH}"]  # linux_*: what pip wheel builds from an sdist here


SUPPORTED: frozenset[Tag] = frozenset(
    [
        *cpython_tags(PYTHON, abis=[f"cp{PYTHON[0]}{PYTHON[1]}"], platforms=_platforms()),
        *compatible_tags(PYTHON, f"cp{PYTHON[0]}{PYTHON[1]}", platforms=_platforms()),
    ]
)


def fits(wheel: str) -> bool:
    """Whether the wheel file ``wheel`` installs on the images' Python and platform."""
    try:
        _, _, _, tags = parse_wheel_filename(wheel)
    except InvalidWheelFilename:
        return False
    return not tags.isdisjoint(SUPPORTED)


def read_pins(lock: Path) -> list[str]:
    """The ``name==version`` lines of a lock file (hack/lock-images.sh writes nothing else)."""
    lines = [line.split("#", 1)[0].strip() for line in lock.read_text().splitlines()]
    pins = [line for line in lines if line]
    loose = [line for line in pins if "==" not in line]
    if loose:
        raise WheelError(f"{lock}: lines without an exact version: {', '.join(loose)}; hack/lock-images.sh writes it")
    return pins


def _matches(pin: str, wheel: str) -> bool:
    name, version = pin.split("==", 1)
    try:
        wheel_name, wheel_version, _, _ = parse_wheel_filename(wheel)
    except InvalidWheelFilename:
        return False
    return wheel_name == canonicalize_name(name) and wheel_version == Version(version)


class Pool:
    """The shared directory of wheels under the cache."""

    def __init__(self, directory: Path, python: str = sys.executable):
        self.directory = directory
        self.python = python

    def wheels_for(self, pins: list[str]) -> tuple[dict[str, list[Path]], list[str]]:
        """For each pin the fitting wheels the pool holds, and the pins it holds none for."""
        files = sorted(self.directory.glob("*.whl")) if self.directory.is_dir() else []
        found = {pin: [f for f in files if _matches(pin, f.name) and fits(f.name)] for pin in pins}
        return found, [pin for pin, wheels in found.items() if not wheels]

    def fill_command(self, pins: list[str]) -> list[str]:
        return [self.python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(self.directory), *pins]

    def ensure(self, pins: list[str], dry_run: bool = False) -> list[Path]:
        """The wheels of ``pins``, fetching (or building) what the pool lacks."""
        found, missing = self.wheels_for(pins)
        if missing:
            command = self.fill_command(missing)
            if dry_run:
                print(f"would fetch {len(missing)} of {len(pins)} wheels: {' '.join(command)}", file=sys.stderr)
                return []
            self.directory.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=2)
            if result.returncode != 0:
                raise WheelError(f"pip could not fetch the wheels (exit code {result.returncode}, output above)")
            print(f"fetched {len(missing)} wheels in {time.monotonic() - started:.0f} s", file=sys.stderr)
            found, missing = self.wheels_for(pins)
        if missing:
            platform = (
                f"CPython {PYTHON[0]}.{PYTHON[1]} on {ARCH} Linux with glibc {GLIBC[0]}.{GLIBC[1]} (Debian bookworm)"
            )
            message = f"no wheel for {platform} in {self.directory} for: {', '.join(missing)}"
            unfit = [f.name for f in sorted(self.directory.glob("*.whl")) if any(_matches(p, f.name) for p in missing)]
            if unfit:
                message += f"; pip left only ones for another platform ({', '.join(unfit)}): fill it on such a machine"
            raise WheelError(message)
        wheels = sorted({wheel for matching in found.values() for wheel in matching})
        now = time.time()
        for wheel in wheels:
            os.utime(wheel, (now, now))  # used: keeps it from pruning
        return wheels

    def prune(self) -> None:
        cutoff = time.time() - UNUSED_DAYS * 86400
        for wheel in self.directory.glob("*.whl"):
            if wheel.stat().st_mtime < cutoff:
                wheel.unlink()


def place(files: list[Path], directory: Path) -> None:
    """Make ``directory`` hold exactly ``files``: hard links where the file system allows (the
    wheels are large), copies where it does not."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for source in files:
        try:
            os.link(source, directory / source.name)
        except OSError:
            shutil.copy2(source, directory / source.name)


def project_files() -> list[Path]:
    """What the ``soundmind`` wheel is built from, relative to the repository root."""
    files = [Path("pyproject.toml"), Path("README.md")]
    for package in ("soundmind", "operator"):
        for path in sorted((ROOT / package).rglob("*")):
            generated = any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
            if path.is_file() and not generated:
                files.append(path.relative_to(ROOT))
    return files


def project_hash() -> str:
    digest = hashlib.sha256()
    for path in project_files():
        digest.update(str(path).encode() + b"\0" + (ROOT / path).read_bytes() + b"\0")
    return digest.hexdigest()


def build_project_wheel(directory: Path, python: str = sys.executable) -> Path:
    """The ``soundmind`` wheel in ``directory`` (alone there), built from a clean copy of its sources:
    an in-tree build would pick up a stale ``build/`` (modules deleted since would ship)."""
    with tempfile.TemporaryDirectory(prefix="soundmind-wheel-") as scratch:
        sources = Path(scratch) / "src"
        for path in project_files():
            (sources / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, sources / path)
        built = Path(scratch) / "wheel"
        command = [python, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(built), str(sources)]
        if subprocess.run(command, stdin=subprocess.DEVNULL, stdout=2).returncode != 0:
            raise WheelError(f"building the soundmind wheel failed (output above): {' '.join(command)}")
        (wheel,) = built.glob("soundmind-*.whl")
        place([wheel], directory)
        return directory / wheel.name
