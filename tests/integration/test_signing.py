"""Signed images, checked as a platform engineer checks them before installing: cosign (hack/tools.sh)
signs an image in the test registry by digest with a key pair this module makes, and
``cosign verify --key`` accepts it; it refuses the image an attacker pushes over the signed one's tag,
an image nobody signed, and a signature made with another key. Then the release's own steps
(``make release-dry-run``: hack/release.py, which the release workflow runs too) push, attest and sign
the built images and both charts, and each of those verifies.

cosign trusts the registry's CA (the cluster's) with ``--registry-cacert``, so TLS is verified
throughout, and logs in with the registry's password from a Docker config. With a key and no transparency log
here, signing passes ``--tlog-upload=false`` and verifying ``--insecure-ignore-tlog=true``."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hack import release
from hack.push import copy_command
from tests.support.oci_archive import LayerFile, write_image_archive
from tests.support.prerequisite import missing
from tests.support.registry import Registry

PASSWORD = "a password for this module's keys"
VERIFIED = "The signatures were verified against the specified public key"
# cosign's exit codes and messages (cmd/cosign/errors): none attached, none that the key verifies.
NO_SIGNATURES = (10, "Error: no signatures found")
NO_MATCHING = (12, "Error: no matching signatures: invalid signature")


@dataclass(frozen=True)
class Client:
    """cosign and skopeo with this registry's login and CA."""

    cosign_binary: Path
    env: dict[str, str]
    cert_dir: Path
    auth_file: Path
    registry: Registry

    def cosign(self, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.cosign_binary), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)

    def verify(
        self, key: Path, reference: str, *, command: tuple[str, ...] = ("verify",)
    ) -> subprocess.CompletedProcess:
        trust = release.registry_flags(self.registry.ca)
        return self.cosign(*command, f"--key={key}", "--insecure-ignore-tlog=true", *trust, reference)

    def push(self, archive: Path, repository_tag: str) -> str:
        """Copy an image archive to ``registry/repository:tag`` (skopeo); its reference by digest."""
        digest_file = archive.with_suffix(".digest")
        destination = f"{self.registry.host}/{repository_tag}"
        command = copy_command(archive, destination, digest_file, self.cert_dir, self.auth_file)
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        return f"{self.registry.host}/{repository_tag.rsplit(':', 1)[0]}@{digest_file.read_text().strip()}"


@pytest.fixture(scope="module")
def client(registry: Registry, cosign: Path, tmp_path_factory: pytest.TempPathFactory) -> Client:
    if shutil.which("skopeo") is None:
        missing("skopeo is missing: run hack/apt.sh")
    home = tmp_path_factory.mktemp("signing")
    docker_config = home / "docker"
    docker_config.mkdir()
    auth_file = docker_config / "config.json"
    auth_file.write_text(registry.docker_config())
    cert_dir = home / "certs"
    cert_dir.mkdir()
    shutil.copy(registry.ca, cert_dir / "ca.crt")
    env = {**os.environ, **release.environment({"DOCKER_CONFIG": str(docker_config)})}
    env["COSIGN_PASSWORD"] = PASSWORD
    return Client(cosign, env, cert_dir, auth_file, registry)


@pytest.fixture(scope="module")
def keys(client: Client, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """A cosign key pair per name, made on first use: (private, public)."""
    directory = tmp_path_factory.mktemp("keys")

    def pair(name: str) -> tuple[Path, Path]:
        prefix = directory / name
        if not prefix.with_suffix(".key").exists():
            made = client.cosign("generate-key-pair", f"--output-key-prefix={prefix}")
            assert made.returncode == 0, made.stderr
        return prefix.with_suffix(".key"), prefix.with_suffix(".pub")

    return pair


def _image(tmp_path: Path, name: str, content: str, *, env: tuple[str, ...] = ()) -> Path:
    program = tmp_path / f"{name}.txt"
    program.write_text(content)
    return write_image_archive(
        tmp_path / f"{name}.tar", f"{name}:1", [LayerFile("app.txt", program)], ["/app"], env=env
    )


def _refusal(expected: tuple[int, str], stderr: str) -> tuple[int, str]:
    """``expected``'s exit code, and ``stderr`` if it says ``expected``'s message (else the message
    alone, so that a failed comparison shows both)."""
    code, message = expected
    return code, stderr if message in stderr else message


def _sign(client: Client, key: Path, reference: str) -> None:
    signed = client.cosign(
        *release.sign_command(Path("cosign"), release.Signer(key), reference, client.registry.ca)[1:]
    )
    assert signed.returncode == 0, signed.stderr


def test_a_signed_image_verifies_by_digest_and_by_tag(client: Client, keys, tmp_path: Path):
    key, public = keys("release")
    reference = client.push(_image(tmp_path, "app", "v1"), "signing/app:1")
    _sign(client, key, reference)
    verified = client.verify(public, reference)
    assert verified.returncode == 0, verified.stderr
    assert VERIFIED in verified.stderr
    (claim,) = json.loads(verified.stdout)
    assert claim["critical"]["image"]["docker-manifest-digest"] == reference.split("@")[1]
    by_tag = client.verify(public, f"{client.registry.host}/signing/app:1")
    assert by_tag.returncode == 0, by_tag.stderr


def test_an_image_pushed_over_a_signed_tag_fails_verification(client: Client, keys, tmp_path: Path):
    """The tampered image: the same tag now names other content (one more environment variable), which
    no one signed; the signed digest still verifies."""
    key, public = keys("release")
    signed = client.push(_image(tmp_path, "tampered", "v1"), "signing/tampered:1")
    _sign(client, key, signed)
    tampered = client.push(_image(tmp_path, "tampered", "v1", env=("PAYLOAD=1",)), "signing/tampered:1")
    assert tampered.split("@")[1] != signed.split("@")[1]
    for reference in (f"{client.registry.host}/signing/tampered:1", tampered):
        refused = client.verify(public, reference)
        assert (refused.returncode, refused.stderr) == _refusal(NO_SIGNATURES, refused.stderr)
        assert VERIFIED not in refused.stderr
    assert client.verify(public, signed).returncode == 0


def test_an_unsigned_image_fails_verification(client: Client, keys, tmp_path: Path):
    _, public = keys("release")
    unsigned = client.push(_image(tmp_path, "unsigned", "never signed"), "signing/unsigned:1")
    refused = client.verify(public, unsigned)
    assert (refused.returncode, refused.stderr) == _refusal(NO_SIGNATURES, refused.stderr)


def test_a_signature_by_another_key_fails_verification(client: Client, keys, tmp_path: Path):
    key, _ = keys("release")
    _, other_public = keys("someone-else")
    reference = client.push(_image(tmp_path, "other", "v1"), "signing/other:1")
    _sign(client, key, reference)
    refused = client.verify(other_public, reference)
    assert (refused.returncode, refused.stderr) == _refusal(NO_MATCHING, refused.stderr)


def test_make_release_dry_run_pushes_attests_and_signs_every_built_image_and_both_charts(
    client: Client, keys, release_tools: Path
):
    """``make release-dry-run`` as a platform engineer runs it against their registry, with their key
    and the registry's CA (hack/release.py, which the release workflow runs too): the images ``make
    images`` built (operator and stand-in; the trainer and server only where their tarballs exist,
    else skipped with the reason), each with a signed SPDX SBOM, and both charts, all verifiable with
    the key, and all in the release notes."""
    _, public = keys("release")
    key = public.with_suffix(".key")
    notes = release.ROOT / ".build" / "release" / "notes.md"
    notes.unlink(missing_ok=True)
    command = ["make", "-s", "release-dry-run", f"REGISTRY={client.registry.host}"]
    command += [f"REGISTRY_CA={client.registry.ca}", f"COSIGN_KEY={key}"]
    # As from a shell: not as a sub-make of `make test`, whose flags the environment would pass on.
    env = {name: value for name, value in client.env.items() if name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=release.ROOT)
    assert done.returncode == 0, done.stderr
    references = [word for word in done.stdout.split() if "@sha256:" in word]  # after `make images`' tarballs
    images = [r for r in references if "/charts/" not in r]
    charts = [r for r in references if "/charts/" in r]
    assert {r.split("@")[0].rsplit("/", 1)[1] for r in images} >= {"soundmind-operator", "soundmind-standin"}
    assert sorted(r.split("@")[0].rsplit("/", 1)[1] for r in charts) == ["soundmind-operator", "soundmind-serving"]
    for name in {"trainer", "server"} - {r.split("@")[0].rsplit("-", 1)[1] for r in images}:
        assert f"soundmind-{name}: skipped: no tarball at" in done.stderr
    for reference in references:
        verified = client.verify(public, reference)
        assert verified.returncode == 0, (reference, verified.stderr)
        assert reference in notes.read_text()
    for reference in images:
        attested = client.verify(public, reference, command=("verify-attestation", "--type=spdxjson"))
        assert attested.returncode == 0, (reference, attested.stderr)
        statement = json.loads(base64.b64decode(json.loads(attested.stdout.splitlines()[0])["payload"]))
        packages = {package["name"] for package in statement["predicate"]["packages"]}
        assert {"pydantic", "kubernetes"} <= packages, reference  # the lock's wheels, as syft found them
