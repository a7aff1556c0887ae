"""Building images/<IMAGE>/Dockerfile offline and saving each image as a tarball (what a node imports:
``ctr -n k8s.io images import <tarball>``); the command line is ``python -m hack.images``.

Per image:

1. the base, ``soundmind-base:bookworm`` (plus the Debian packages the Dockerfile's
   ``ARG DEBIAN_PACKAGES`` names), made by debootstrap (:mod:`hack.images.base`), or the image
   ``SOUNDMIND_IMAGE_BASE`` names;
2. the wheels of its lock, fetched by this machine's pip into the
   shared pool and linked into ``.build/wheels/<image>/``, and the ``soundmind`` wheel in
   ``.build/project/`` (:mod:`hack.images.wheels`);
3. ``docker build --network none --build-arg BASE=<base>``, on Docker's BuildKit, whose
   ``RUN --mount=type=bind`` reads those folders from the build context;
4. ``docker save`` to ``<cache>/images/soundmind-<image>-dev.tar``, written whole or not at all;
5. for the trainer and the server, whose layers are gigabytes, the private engine's copies removed:
   its build cache (which holds the build context's wheels and its own copy of the layers) before the
   save, the image after it. The tarball is what a node imports, and a machine's disk holds only so
   many copies of 10 GB.

An image whose inputs (its folder under images/, its wheels, the project's sources, the base, this
tool) are those its tarball was made from is not built again, and no Docker engine is started.

Each image carries the ``org.opencontainers.image.*`` labels ``source``, ``version`` (soundmind/version.py)
and ``revision``: the git commit the build ran at, with ``-dirty`` appended when tracked files differ
from it. The commit is not an input: a tarball kept because its inputs are unchanged names the
commit it was built at, which builds this same image. A tree that is not a git checkout (an
unpacked source archive) gets no ``revision`` label rather than a made-up one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hack.images import base as bases
from hack.images import wheels
from hack.images.docker import Engine
from soundmind.version import SOURCE_URL, VERSION

ROOT = wheels.ROOT
CONTEXT = ROOT / ".build"  # gitignored, and in the build context (.dockerignore)
INPUTS_LABEL = "ai.soundmind.inputs"
OCI_LABEL = "org.opencontainers.image"
TAG = "dev"
BUILD_CACHE_HOURS = 7 * 24


@dataclass(frozen=True)
class Image:
    name: str
    project: bool = True  # installs the soundmind wheel
    # False: the private engine keeps nothing of it once its tarball is written (a change rebuilds it
    # from the wheels); the engine's whole build cache goes with it, the other images' too, so their
    # next change also rebuilds from the wheels once. True: a source change rebuilds it in seconds.
    keep_in_engine: bool = True

    @property
    def folder(self) -> Path:
        return ROOT / "images" / self.name

    @property
    def tag(self) -> str:
        return f"soundmind-{self.name}:{TAG}"

    def tarball(self, cache: Path) -> Path:
        return cache / f"{self.tag.replace(':', '-')}.tar"

    def debian_packages(self) -> tuple[str, ...]:
        """What the Dockerfile installs with apt unless its base has it (``ARG DEBIAN_PACKAGES="..."``)."""
        found = re.search(r'^ARG DEBIAN_PACKAGES="([^"]*)"', (self.folder / "Dockerfile").read_text(), re.M)
        return tuple(found.group(1).split()) if found else ()

    def pins(self) -> list[str]:
        return wheels.read_pins(self.folder / "requirements.lock")


IMAGES = {
    "operator": Image("operator"),
    "standin": Image("standin"),
    "trainer": Image("trainer", keep_in_engine=False),
    "server": Image("server", project=False, keep_in_engine=False),
}


def cache_dir() -> Path:
    """hack/venv.sh's and hack/tools.sh's cache, ``images/`` in it."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("SOUNDMIND_CACHE") or xdg / "soundmind") / "images"


def git_revision(root: Path = ROOT) -> str | None:
    """HEAD's commit, ``-dirty`` appended when tracked files differ from it; None outside a git checkout."""
    try:
        found = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True
        )
    except FileNotFoundError:  # no git at all: no more a checkout than a tree without .git
        return None
    # An unpacked tree inside some other checkout is not that checkout's commit.
    if found.returncode != 0 or Path(found.stdout.split()[0]).resolve() != root.resolve():
        return None
    dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"]).returncode != 0
    return found.stdout.split()[1] + ("-dirty" if dirty else "")


def oci_labels(revision: str | None) -> dict[str, str]:
    labels = {f"{OCI_LABEL}.source": SOURCE_URL, f"{OCI_LABEL}.version": VERSION}
    if revision:
        labels[f"{OCI_LABEL}.revision"] = revision
    return labels


def inputs_hash(image: Image, base: bases.Base | bases.GivenBase, wheel_files: list[Path], project: str) -> str:
    """What decides the image: its folder, its wheels, the project's sources, the base, this tool, the
    version and source it is labelled with (the server installs no project sources to carry them)."""
    digest = hashlib.sha256()
    tool = sorted(Path(__file__).parent.glob("*.py"))
    for path in sorted(p for p in image.folder.rglob("*") if p.is_file()) + tool:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update("\n".join([base.tag, base.key, *(w.name for w in wheel_files), SOURCE_URL, VERSION]).encode())
    digest.update(project.encode() if image.project else b"")
    return digest.hexdigest()[:16]


def build_command(image: Image, base_tag: str, inputs: str, revision: str | None) -> list[str]:
    return [
        "build",
        "--network=none",
        "--progress=plain",
        f"--build-arg=BASE={base_tag}",
        f"--label={INPUTS_LABEL}={inputs}",
        *(f"--label={name}={value}" for name, value in oci_labels(revision).items()),
        f"--file={image.folder / 'Dockerfile'}",
        f"--tag={image.tag}",
        str(ROOT),
    ]


def _sidecar(tarball: Path) -> Path:
    return tarball.with_name(tarball.name + ".inputs")


def _current(tarball: Path, inputs: str) -> bool:
    sidecar = _sidecar(tarball)
    return tarball.exists() and sidecar.exists() and sidecar.read_text().strip() == inputs


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(names: list[str], dry_run: bool = False) -> list[Path]:
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per machine: the engine and .build/ are shared
        return _build_locked(cache, [IMAGES[name] for name in names], dry_run)


def _build_locked(cache: Path, images: list[Image], dry_run: bool) -> list[Path]:
    pool = wheels.Pool(cache / "wheels")
    project = wheels.project_hash()
    revision = git_revision()
    if revision is None:
        _note(f"{ROOT} is not a git checkout: the images get no {OCI_LABEL}.revision label")
    stale: list[tuple[Image, bases.Base | bases.GivenBase, list[Path], str]] = []
    for image in images:
        base = bases.base_for(image.debian_packages())
        wheel_files = pool.ensure(image.pins(), dry_run=dry_run)
        inputs = inputs_hash(image, base, wheel_files, project)
        if dry_run:
            if isinstance(base, bases.GivenBase):
                _note(f"would build on {base.tag} ({bases.GIVEN_BASE_ENV}), pulled by the engine if it lacks it")
            elif not base.tarball(cache).exists():
                _note(f"would debootstrap {base.tag} ({' '.join(base.packages)}) from {base.mirrors.main}")
            _note(f"would run: docker {' '.join(build_command(image, base.tag, inputs, revision))}")
            _note(f"would run: docker save --output={image.tarball(cache)} {image.tag}")
        elif not _current(image.tarball(cache), inputs):
            stale.append((image, base, wheel_files, inputs))
    if dry_run:
        return []
    if stale:
        _rebuild(cache, stale, revision)
    pool.prune()
    return [image.tarball(cache) for image in images]


def _rebuild(
    cache: Path, stale: list[tuple[Image, bases.Base | bases.GivenBase, list[Path], str]], revision: str | None
) -> None:
    debootstrapped = {base for _, base, _, _ in stale if isinstance(base, bases.Base)}
    for base in debootstrapped:
        bases.ensure_rootfs(base, cache)  # before the engine starts: debootstrap takes minutes
    if any(image.project for image, *_ in stale):
        wheels.build_project_wheel(CONTEXT / "project")
    with Engine(cache / "docker") as docker:
        for image, base, wheel_files, inputs in stale:
            wheels.place(wheel_files, CONTEXT / "wheels" / image.name)
            if base in debootstrapped:  # else a given base, which the build's FROM pulls
                bases.ensure_imported(docker, base, cache)
            if docker.image_label(image.tag, INPUTS_LABEL) != inputs:
                started = time.monotonic()
                docker(*build_command(image, base.tag, inputs, revision))
                _note(f"{image.tag}: built in {time.monotonic() - started:.0f} s")
            if docker.private and not image.keep_in_engine:
                # Before the save: the cache's copies and the tarball would not fit beside the image.
                docker("builder", "prune", "--all", "--force")
            tarball = image.tarball(cache)
            _sidecar(tarball).unlink(missing_ok=True)  # never names a tarball it was not written for
            partial = tarball.with_name(tarball.name + ".partial")
            started = time.monotonic()
            docker("save", f"--output={partial}", image.tag)
            partial.replace(tarball)
            _sidecar(tarball).write_text(inputs + "\n")
            _note(f"{image.tag}: saved {tarball.stat().st_size / 1e9:.1f} GB in {time.monotonic() - started:.0f} s")
            if docker.private and not image.keep_in_engine:
                docker("image", "rm", image.tag)
        # The images and bases these builds replaced, by their labels: the engine may be the user's own.
        for label in (INPUTS_LABEL, bases.KEY_LABEL):
            docker("image", "prune", "--force", f"--filter=label={label}")
        if docker.private:  # a user's engine keeps the build cache they manage
            # BuildKit's layer cache makes a source change rebuild in seconds; a week unused, it goes.
            docker("builder", "prune", "--force", f"--filter=until={BUILD_CACHE_HOURS}h")
