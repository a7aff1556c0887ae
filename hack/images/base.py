"""The images' base, made here without any registry: debootstrap's minimal Debian bookworm from the
mirror apt already uses on this machine, with Debian's CPython 3.11 (``python3``, ``python3-venv``)
and the Debian packages an image's Dockerfile asks for (``ARG DEBIAN_PACKAGES``), its stable and
security updates applied, apt's lists and caches removed; imported into Docker as a local tag.

debootstrap takes minutes, so its root file system is kept as a tarball under the cache, keyed by
what decides its contents (suite, packages, mirrors, this recipe): once per machine; a Docker
engine that lacks the tag (a fresh data root) gets it imported again from the tarball.

Nothing of this machine goes into the image but the mirror addresses (without any user:password part):
debootstrap's copies of its resolv.conf and hostname are removed, and no CA bundle is copied;
Debian's own ``ca-certificates`` package is there only when a Dockerfile asks for it.

Where a registry is at hand (a kind cluster's machine, CI), ``SOUNDMIND_IMAGE_BASE`` names an image to
build on instead (:class:`GivenBase`, e.g. the Dockerfiles' default ``python:3.11-slim-bookworm``):
no debootstrap, no root, and the engine pulls it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from hack.images.docker import Docker, remove_tree

SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python3-venv")  # bookworm's python3 is CPython 3.11, what the locks are for
NAME = "soundmind-base"
KEY_LABEL = "ai.soundmind.base-key"
# `docker import` makes an image with no configuration; these match the official Python image's.
IMAGE_CONFIG = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["bash"]',
)
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
MIRROR_ENV = "SOUNDMIND_DEBIAN_MIRROR"
GIVEN_BASE_ENV = "SOUNDMIND_IMAGE_BASE"


class BaseError(RuntimeError):
    pass


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_sources_list(text: str) -> list[AptSource]:
    """The binary (``deb``) sources of a one-line-style ``sources.list``."""
    lines = (re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip()) for line in text.splitlines())
    return [AptSource(m.group(1), (m.group(2),)) for m in lines if m]


def parse_deb822(text: str) -> list[AptSource]:
    """The enabled binary (``deb``) sources of a deb822-style ``*.sources`` file."""
    sources = []
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("types", "").split() or stanza.get("enabled", "yes").lower() == "no":
            continue
        for uri in stanza.get("uris", "").split():
            sources.append(AptSource(uri, tuple(stanza.get("suites", "").split())))
    return sources


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas, fields, last = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, last = {}, None
        elif line[0] in " \t" and last:
            fields[last] += " " + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            last = last.strip().lower()
            fields[last] = value.strip()
    return stanzas


def host_sources() -> list[AptSource]:
    """What apt on this machine fetches from (sources.list and sources.list.d)."""
    sources: list[AptSource] = []
    listing, directory = APT_SOURCES
    files = [listing] + (sorted(directory.iterdir()) if directory.is_dir() else [])
    for path in files:
        if path.suffix == ".sources":
            sources += parse_deb822(path.read_text())
        elif path.name == "sources.list" or path.suffix == ".list":
            sources += parse_sources_list(path.read_text()) if path.exists() else []
    return sources


@dataclass(frozen=True)
class Mirrors:
    main: str  # bookworm and bookworm-updates
    security: str | None  # bookworm-security


def choose_mirrors(sources: list[AptSource], override: str | None = None) -> Mirrors:
    """The mirrors of this machine's apt for bookworm and its security updates; ``override`` (a
    Debian mirror URL) replaces the main one, for hosts whose apt has none for bookworm."""
    main = override or next((s.uri for s in sources if SUITE in s.suites), None)
    if not main:
        raise BaseError(
            f"apt on this machine has no source for Debian {SUITE} (/etc/apt/sources.list, /etc/apt/sources.list.d); "
            f"set {MIRROR_ENV} to a Debian mirror, e.g. http://deb.debian.org/debian"
        )
    security = next((s.uri for s in sources if f"{SUITE}-security" in s.suites), None)
    return Mirrors(main.rstrip("/"), security.rstrip("/") if security else None)


def _public(uri: str) -> str:
    """The URI without a user:password part, as it may be written into an image."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def image_sources(mirrors: Mirrors) -> str:
    """The image's apt sources (deb822), so images built on it can install more with apt."""
    stanzas = [(mirrors.main, f"{SUITE} {SUITE}-updates")]
    stanzas += [(mirrors.security, f"{SUITE}-security")] if mirrors.security else []
    return "\n".join(
        f"Types: deb\nURIs: {_public(uri)}\nSuites: {suites}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        for uri, suites in stanzas
    )


@dataclass(frozen=True)
class Base:
    packages: tuple[str, ...]  # beyond minbase, sorted
    mirrors: Mirrors

    @property
    def key(self) -> str:
        recipe = Path(__file__).read_bytes()
        text = "\n".join([SUITE, *self.packages, self.mirrors.main, self.mirrors.security or ""])
        return hashlib.sha256(recipe + text.encode()).hexdigest()[:16]  # 16: see ensure_rootfs's pruning

    @property
    def tag(self) -> str:
        """``soundmind-base:bookworm``; a base with more packages than Python gets its own tag."""
        extra = sorted(set(self.packages) - set(PYTHON_PACKAGES))
        suffix = "-" + hashlib.sha256(" ".join(extra).encode()).hexdigest()[:8] if extra else ""
        return f"{NAME}:{SUITE}{suffix}"

    def tarball(self, cache: Path) -> Path:
        return cache / "base" / f"{self.tag.replace(':', '-')}-{self.key}.tar"


@dataclass(frozen=True)
class GivenBase:
    """The image ``SOUNDMIND_IMAGE_BASE`` names, built on as it is: the engine pulls it when it lacks it.
    The builds have no network, so it must already hold the Debian packages a Dockerfile's
    ``ARG DEBIAN_PACKAGES`` names (python:3.11-slim-bookworm has the operator's and the stand-in's: none)."""

    tag: str

    @property
    def key(self) -> str:
        # All that is known of it without an engine: a moving tag is not followed; name a digest to pin it.
        return self.tag


def base_for(debian_packages: tuple[str, ...]) -> Base | GivenBase:
    """The base an image needs: the one ``SOUNDMIND_IMAGE_BASE`` names, or else Python and
    ``debian_packages`` debootstrapped from this machine's mirrors."""
    given = os.environ.get(GIVEN_BASE_ENV)
    if given:
        return GivenBase(given)
    mirrors = choose_mirrors(host_sources(), os.environ.get(MIRROR_ENV))
    return Base(tuple(sorted({*PYTHON_PACKAGES, *debian_packages})), mirrors)


def ensure_rootfs(base: Base, cache: Path) -> Path:
    """The base's root file system as a tarball, made with debootstrap unless cached."""
    tarball = base.tarball(cache)
    if tarball.exists():
        return tarball
    if os.geteuid() != 0:
        raise BaseError("debootstrap needs root (it creates device files and chroots): run as root")
    if not base.mirrors.security:
        print(f"warning: apt here has no {SUITE}-security source; the base gets no security updates", file=sys.stderr)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.parent / f".build-{base.key}-{os.getpid()}"
    rootfs = work / "rootfs"
    started = time.monotonic()
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(base.packages)}", "--components=main",
              SUITE, str(rootfs), base.mirrors.main], "debootstrap")  # fmt: skip
        _update_and_clean(rootfs, base.mirrors)
        partial = work / "rootfs.tar"
        _run(["tar", "--create", f"--file={partial}", "--numeric-owner", "--xattrs", f"--directory={rootfs}",
              "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./dev/*", "."], "tar")  # fmt: skip
        partial.replace(tarball)
    finally:
        remove_tree(work)
    for old in tarball.parent.glob("*.tar"):  # this base's earlier versions, not other bases
        if old != tarball and re.fullmatch(rf"{re.escape(base.tag.replace(':', '-'))}-[0-9a-f]{{16}}\.tar", old.name):
            old.unlink()
    print(f"{base.tag}: debootstrap and updates took {time.monotonic() - started:.0f} s", file=sys.stderr)
    return tarball


def _update_and_clean(rootfs: Path, mirrors: Mirrors) -> None:
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)  # debootstrap's; replaced by:
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(image_sources(mirrors))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    env |= {k: v for k, v in os.environ.items() if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    # Dpkg::Use-Pty=0: the chroot has no /dev/pts, and dpkg's output needs none.
    for step in (["update"], ["--yes", "-o", "Dpkg::Use-Pty=0", "upgrade"], ["clean"]):
        _run(["chroot", str(rootfs), "apt-get", *step], f"apt-get {step[-1]}", env=env)
    # What the image must not carry: apt's lists (stale tomorrow), logs of this build, this machine's
    # resolver and name (the container runtime provides its own). Globbed by the image's own shell.
    leftovers = "/var/lib/apt/lists/* /var/log/apt/* /var/log/dpkg.log /var/log/alternatives.log"
    leftovers += " /etc/resolv.conf /etc/hostname"
    _run(["chroot", str(rootfs), "sh", "-c", f"rm -rf {leftovers}"], "cleaning", env=env)


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=2, env=env)
    if result.returncode != 0:
        raise BaseError(f"{what} failed with exit code {result.returncode} (its output is above): {' '.join(argv)}")


def ensure_imported(docker: Docker, base: Base, cache: Path) -> str:
    """The base's tag in this engine, imported from the cached tarball unless it is there already."""
    if docker.image_label(base.tag, KEY_LABEL) != base.key:
        tarball = ensure_rootfs(base, cache)
        changes = [arg for change in (*IMAGE_CONFIG, f"LABEL {KEY_LABEL}={base.key}") for arg in ("--change", change)]
        docker("import", *changes, str(tarball), base.tag)
    return base.tag
