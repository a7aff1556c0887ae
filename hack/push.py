"""``python -m hack.push REGISTRY [IMAGE...]`` (``make push REGISTRY=...``): copy the image
tarballs ``make images`` saved into a registry with skopeo, as ``REGISTRY/soundmind-<image>:<VERSION>``,
and print each one's reference by digest (``REGISTRY/soundmind-<image>@sha256:...``), one a line.

Without IMAGE: the operator and the stand-in, and the trainer and server where ``make images-all``
saved them. skopeo logs in and trusts as it always does: ``skopeo login REGISTRY`` first (its auth
file, or ``REGISTRY_AUTH_FILE``), the registry's CA in ``/etc/containers/certs.d/<host:port>/`` or
in ``--cert-dir``."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hack.images.build import IMAGES, cache_dir
from soundmind.version import VERSION

ALWAYS = ("operator", "standin")  # what `make images` builds; the others when their tarballs exist
# host[:port] and an optional path, lower case, no tag or digest: what an image reference starts with.
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._/-][a-z0-9]+)*)?$")


class PushError(Exception):
    pass


def repository(registry: str, name: str) -> str:
    return f"{registry.rstrip('/')}/soundmind-{name}"


def copy_command(
    tarball: Path, destination: str, digest_file: Path, cert_dir: Path | None = None, authfile: Path | None = None
) -> list[str]:
    command = ["skopeo", "copy", "--quiet", f"--digestfile={digest_file}"]
    if cert_dir is not None:
        command.append(f"--dest-cert-dir={cert_dir}")
    if authfile is not None:
        command.append(f"--dest-authfile={authfile}")
    return [*command, f"docker-archive:{tarball}", f"docker://{destination}"]


def push(
    registry: str, names: list[str] | None = None, *, cert_dir: Path | None = None, authfile: Path | None = None
) -> dict[str, str]:
    """Push the images ``names`` (default: see the module's doc) to ``registry``; their references
    by digest, keyed by image name."""
    if not _REGISTRY.match(registry):
        raise PushError(f"REGISTRY={registry!r}: not a registry host[:port][/path] (e.g. registry.example:5000/team)")
    if shutil.which("skopeo") is None:
        raise PushError("skopeo is missing: run hack/apt.sh (make deps)")
    cache = cache_dir()
    if names is None:
        names = [name for name in IMAGES if name in ALWAYS or IMAGES[name].tarball(cache).exists()]
    pushed = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            tarball = IMAGES[name].tarball(cache)
            if not tarball.exists():
                raise PushError(f"image {name}: no tarball at {tarball}; run `python -m hack.images {name}` first")
            destination = f"{repository(registry, name)}:{VERSION}"
            digest_file = Path(scratch) / name
            done = subprocess.run(
                copy_command(tarball, destination, digest_file, cert_dir, authfile), capture_output=True, text=True
            )
            if done.returncode != 0:
                raise PushError(f"skopeo copy {tarball.name} to {destination} failed: {done.stderr.strip()}")
            pushed[name] = f"{repository(registry, name)}@{digest_file.read_text().strip()}"
    return pushed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("registry", metavar="REGISTRY", help="host[:port][/path] to push to")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=f"any of: {', '.join(IMAGES)}")
    parser.add_argument("--cert-dir", type=Path, help="a directory of the registry's CA certificates (*.crt)")
    parser.add_argument("--authfile", type=Path, help="skopeo's auth file (default: the one `skopeo login` writes)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.images if name not in IMAGES]
    if unknown:
        parser.error(f"no image {', '.join(unknown)}; there are {', '.join(IMAGES)}")
    try:
        pushed = push(args.registry, args.images or None, cert_dir=args.cert_dir, authfile=args.authfile)
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(*pushed.values(), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
