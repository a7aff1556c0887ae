"""``python -m hack.release REGISTRY (--keyless | --key KEY) [--ca-file CA] [--notes FILE] [--require-all]``:
a release's steps once its images are built, in one place, so that the release workflow
(.github/workflows/release.yaml: ghcr.io, keyless) and ``make release-dry-run REGISTRY=...`` (a
local registry, a local key) cannot drift apart. For each image whose tarball hack/images saved:

1. push it with skopeo (hack/push.py), as ``REGISTRY/soundmind-<image>:<VERSION>``, and take
   its digest;
2. describe it: an SPDX SBOM made by syft from the same tarball, attached to the image by digest as a
   signed cosign attestation (``cosign attest --type spdxjson``);
3. sign it by digest with cosign: keyless (the workflow's OIDC identity, Fulcio and Rekor), or with a
   key, which a dry run makes (``cosign generate-key-pair``) when KEY does not exist yet.

Then the operator and serving charts are packaged and pushed as OCI artifacts
(``helm push ... oci://REGISTRY/charts``) and signed the same way, and the release notes (every
reference by digest, and how to verify them) are written to FILE.

An image without a tarball is skipped, with the reason, unless ``--require-all`` (the workflow builds
all four). Logins are the caller's, in one Docker-format auth file that skopeo, cosign and helm all
read: ``$DOCKER_CONFIG/config.json`` (default ``~/.docker/config.json``). With a key, nothing goes to
a transparency log (``--tlog-upload=false``): a local registry's artifacts are no public record.
Tools: skopeo from Debian; helm, cosign and syft from hack/tools.sh.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hack.images.build import IMAGES, cache_dir
from hack.push import PushError, push
from soundmind.version import SOURCE_URL, VERSION

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ("soundmind-operator", "soundmind-serving")
TOOLS = ("helm", "cosign", "syft")
SKIP_REASON = {
    "trainer": "`make images-all` builds it (CUDA wheels: about an hour cold); the release workflow does",
    "server": "`make images-all` builds it (CUDA wheels: about an hour cold); the release workflow does",
}
# What the release workflow's keyless signatures are issued to (verify with these).
OIDC_ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = ".github/workflows/release.yaml"


class ReleaseError(Exception):
    pass


@dataclass(frozen=True)
class Signer:
    """A key (``key``, with ``COSIGN_PASSWORD`` from the environment) or, with none, keyless."""

    key: Path | None

    def flags(self) -> list[str]:
        return ["--key", str(self.key), "--tlog-upload=false"] if self.key else []


def tools_dir() -> Path:
    return cache_dir().parent / "bin" / "current"


def _run(command: list[str], what: str) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ReleaseError(f"{what} failed (exit {done.returncode}): {' '.join(command)}\n{done.stderr.strip()}")
    return done


def environment(environ: dict[str, str]) -> dict[str, str]:
    """One auth file for all three tools: the Docker config cosign reads, named to skopeo and helm."""
    docker_config = Path(environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    auth = str(docker_config / "config.json")
    return {"DOCKER_CONFIG": str(docker_config), "REGISTRY_AUTH_FILE": auth, "HELM_REGISTRY_CONFIG": auth}


def registry_flags(ca_file: Path | None) -> list[str]:
    """cosign's trust in a registry the system does not trust: that CA for the registry alone
    (Fulcio and Rekor, keyless, keep the system's)."""
    return [f"--registry-cacert={ca_file}"] if ca_file else []


def ensure_key(key: Path, cosign: Path) -> None:
    """A dry run's key pair, ``key`` and ``key``'s ``.pub`` beside it, made unless it exists."""
    if key.exists():
        return
    if key.suffix != ".key":
        raise ReleaseError(f"--key {key}: no such file; name a .key file, and a new pair is made there")
    key.parent.mkdir(parents=True, exist_ok=True)
    prefix = str(key.with_suffix(""))
    _run([str(cosign), "generate-key-pair", f"--output-key-prefix={prefix}"], "cosign generate-key-pair")
    print(f"made a cosign key pair: {key} (public: {key.with_suffix('.pub')})", file=sys.stderr)


def plan(require_all: bool) -> tuple[list[str], dict[str, str]]:
    """The images to release (their tarballs exist) and the skipped ones with the reason."""
    cache = cache_dir()
    present, skipped = [], {}
    for name, image in IMAGES.items():
        if image.tarball(cache).exists():
            present.append(name)
        else:
            skipped[name] = f"no tarball at {image.tarball(cache)}: {SKIP_REASON.get(name, '`make images` builds it')}"
    if require_all and skipped:
        raise ReleaseError("; ".join(f"{name}: {why}" for name, why in skipped.items()))
    return present, skipped


def sbom_command(syft: Path, tarball: Path, output: Path) -> list[str]:
    return [str(syft), "scan", f"docker-archive:{tarball}", "--quiet", f"--output=spdx-json={output}"]


def attest_command(cosign: Path, signer: Signer, sbom: Path, reference: str, ca_file: Path | None = None) -> list[str]:
    command = [str(cosign), "attest", "--yes", *signer.flags(), *registry_flags(ca_file)]
    return [*command, "--type=spdxjson", f"--predicate={sbom}", reference]


def sign_command(cosign: Path, signer: Signer, reference: str, ca_file: Path | None = None) -> list[str]:
    return [str(cosign), "sign", "--yes", *signer.flags(), *registry_flags(ca_file), reference]


def push_chart(helm: Path, chart: str, registry: str, scratch: Path, ca_file: Path | None) -> str:
    """Package ``chart`` (its dependencies first) and push it to ``oci://REGISTRY/charts``; its
    reference by digest."""
    source = ROOT / "charts" / chart
    _run([str(helm), "dependency", "build", str(source)], f"helm dependency build {chart}")
    packaged = _run([str(helm), "package", str(source), f"--destination={scratch}"], f"helm package {chart}")
    tgz = packaged.stdout.strip().rsplit(": ", 1)[-1]
    ca = [f"--ca-file={ca_file}"] if ca_file else []
    pushed = _run([str(helm), "push", tgz, f"oci://{registry}/charts", *ca], f"helm push {chart}")
    # "Pushed: <ref>:<version>" and "Digest: sha256:...", on stderr (helm 3.22).
    found = re.search(r"Digest: (sha256:[0-9a-f]{64})", pushed.stderr + pushed.stdout)
    if not found:
        raise ReleaseError(f"helm push {chart}: no digest in its output: {pushed.stderr!r}")
    return f"{registry}/charts/{chart}@{found.group(1)}"


def keyless_identity(environ: dict[str, str]) -> str:
    """The one identity the workflow's certificates name: this repository's release workflow at this
    tag (GitHub's variables where it runs; else the project's source and version). A pattern that any
    repository's release.yaml matched would accept anyone's signature."""
    if "GITHUB_REPOSITORY" in environ and "GITHUB_REF" in environ:
        repository = f"{environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{environ['GITHUB_REPOSITORY']}"
        return f"{repository}/{WORKFLOW}@{environ['GITHUB_REF']}"
    return f"{SOURCE_URL}/{WORKFLOW}@refs/tags/v{VERSION}"


def notes(images: dict[str, str], charts: dict[str, str], skipped: dict[str, str], signer: Signer) -> str:
    """The release notes: every artifact by digest, what was skipped, and how to verify."""
    lines = [f"## SoundMind {VERSION}", "", "### Images", ""]
    lines += [f"- `{reference}`" for reference in images.values()]
    lines += [f"- soundmind-{name}: skipped ({why})" for name, why in skipped.items()]
    lines += ["", "### Charts (OCI)", ""]
    for chart, reference in charts.items():
        repository = reference.split("@")[0]
        lines.append(f"- `{reference}`: `helm install {chart} oci://{repository} --version {VERSION}`")
    example = next(iter(images.values()), "REGISTRY/soundmind-operator@sha256:...")
    if signer.key:
        verify = f"cosign verify --key {signer.key.with_suffix('.pub')} --insecure-ignore-tlog=true {example}"
        attestation = verify.replace("cosign verify ", "cosign verify-attestation --type spdxjson ")
    else:
        identity = f"--certificate-identity {keyless_identity(os.environ)}"
        verify = f"cosign verify {identity} --certificate-oidc-issuer {OIDC_ISSUER} {example}"
        attestation = verify.replace("cosign verify ", "cosign verify-attestation --type spdxjson ")
    lines += ["", "### Verify", "", "```", verify, attestation, "```", ""]
    return "\n".join(lines)


def release(
    registry: str, signer: Signer, *, ca_file: Path | None = None, require_all: bool = False
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Push, describe and sign the images, push and sign the charts: (images, charts, skipped). The
    tools read their logins from the environment (:func:`environment`); ``ca_file`` is the registry's CA."""
    tools = {name: tools_dir() / name for name in TOOLS}
    absent = [name for name, path in tools.items() if not os.access(path, os.X_OK)]
    if absent:
        raise ReleaseError(f"{', '.join(absent)} missing from {tools_dir()}: run hack/tools.sh {' '.join(TOOLS)}")
    if signer.key:
        ensure_key(signer.key, tools["cosign"])
    present, skipped = plan(require_all)
    for name, why in skipped.items():
        print(f"soundmind-{name}: skipped: {why}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="soundmind-release-") as scratch:
        cert_dir = None
        if ca_file is not None:  # skopeo reads a directory of *.crt
            cert_dir = Path(scratch) / "certs"
            cert_dir.mkdir()
            shutil.copy(ca_file, cert_dir / "ca.crt")
        try:
            authfile = Path(os.environ["REGISTRY_AUTH_FILE"]) if "REGISTRY_AUTH_FILE" in os.environ else None
            images = push(registry, present, cert_dir=cert_dir, authfile=authfile)
        except PushError as error:
            raise ReleaseError(str(error)) from None
        for name, reference in images.items():
            sbom = Path(scratch) / f"{name}.spdx.json"
            _run(sbom_command(tools["syft"], IMAGES[name].tarball(cache_dir()), sbom), f"syft {name}")
            _run(attest_command(tools["cosign"], signer, sbom, reference, ca_file), f"cosign attest {name}")
            _run(sign_command(tools["cosign"], signer, reference, ca_file), f"cosign sign {name}")
            print(f"soundmind-{name}: pushed, SBOM attested, signed: {reference}", file=sys.stderr)
        charts = {}
        for chart in CHARTS:
            charts[chart] = push_chart(tools["helm"], chart, registry, Path(scratch), ca_file)
            _run(sign_command(tools["cosign"], signer, charts[chart], ca_file), f"cosign sign chart {chart}")
            print(f"{chart} chart: pushed, signed: {charts[chart]}", file=sys.stderr)
    return images, charts, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("registry", metavar="REGISTRY", help="host[:port][/path], e.g. ghcr.io/OWNER")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--keyless", action="store_true", help="sign with the CI's OIDC identity (Fulcio, Rekor)")
    how.add_argument("--key", type=Path, help="a cosign private key (COSIGN_PASSWORD); made if it does not exist")
    parser.add_argument("--ca-file", type=Path, help="the registry's CA certificate, unless the system trusts it")
    parser.add_argument("--notes", type=Path, help="write the release notes (markdown) here")
    parser.add_argument("--require-all", action="store_true", help="fail rather than skip an image not built")
    args = parser.parse_args(argv)
    signer = Signer(args.key.resolve() if args.key else None)
    os.environ.update(environment(os.environ))
    try:
        images, charts, skipped = release(args.registry, signer, ca_file=args.ca_file, require_all=args.require_all)
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = notes(images, charts, skipped, signer)
    if args.notes:
        args.notes.parent.mkdir(parents=True, exist_ok=True)
        args.notes.write_text(text)
    print(*images.values(), *charts.values(), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
