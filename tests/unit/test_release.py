"""The pure parts of hack/release.py, the steps the release workflow and `make release-dry-run` share:
what is released or skipped, the tools' commands and environment, and the release notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack import release
from hack.images import build
from soundmind.version import VERSION

DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOUNDMIND_CACHE", str(tmp_path))
    images = tmp_path / "images"
    images.mkdir()
    return images


def test_images_without_a_tarball_are_skipped_saying_how_to_build_them(cache: Path):
    for name in ("operator", "standin"):
        build.IMAGES[name].tarball(cache).write_bytes(b"")
    present, skipped = release.plan(require_all=False)
    assert present == ["operator", "standin"]
    assert set(skipped) == {"trainer", "server"}
    assert "make images-all" in skipped["trainer"] and str(cache) in skipped["trainer"]


def test_the_workflow_refuses_to_release_without_every_image(cache: Path):
    build.IMAGES["operator"].tarball(cache).write_bytes(b"")
    with pytest.raises(release.ReleaseError, match="standin: no tarball at"):
        release.plan(require_all=True)


def test_a_key_signs_without_the_public_transparency_log_and_keyless_with_it():
    cosign, reference = Path("/bin/cosign"), f"r.example/soundmind-operator@{DIGEST}"
    keyed = release.sign_command(cosign, release.Signer(Path("/k/cosign.key")), reference)
    assert keyed == ["/bin/cosign", "sign", "--yes", "--key", "/k/cosign.key", "--tlog-upload=false", reference]
    assert release.sign_command(cosign, release.Signer(None), reference) == ["/bin/cosign", "sign", "--yes", reference]
    attest = release.attest_command(cosign, release.Signer(None), Path("/s/sbom.json"), reference)
    assert attest[-3:] == ["--type=spdxjson", "--predicate=/s/sbom.json", reference]


def test_the_sbom_is_read_from_the_tarball_that_was_pushed():
    command = release.sbom_command(Path("/bin/syft"), Path("/c/x.tar"), Path("/s/x.json"))
    assert command == ["/bin/syft", "scan", "docker-archive:/c/x.tar", "--quiet", "--output=spdx-json=/s/x.json"]


def test_skopeo_cosign_and_helm_read_one_login(tmp_path: Path):
    auth = str(tmp_path / "config.json")
    assert release.environment({"DOCKER_CONFIG": str(tmp_path)}) == {
        "DOCKER_CONFIG": str(tmp_path),
        "REGISTRY_AUTH_FILE": auth,
        "HELM_REGISTRY_CONFIG": auth,
    }


def test_cosign_trusts_a_given_ca_for_the_registry_alone():
    """Not SSL_CERT_FILE: keyless signing must still trust Fulcio and Rekor through the system's CAs."""
    command = release.sign_command(Path("cosign"), release.Signer(None), "r", Path("/pki/ca.crt"))
    assert command == ["cosign", "sign", "--yes", "--registry-cacert=/pki/ca.crt", "r"]
    attest = release.attest_command(Path("cosign"), release.Signer(None), Path("s.json"), "r", Path("/pki/ca.crt"))
    assert "--registry-cacert=/pki/ca.crt" in attest


def test_the_notes_give_every_digest_and_how_to_verify_it():
    images = {"operator": f"ghcr.io/o/soundmind-operator@{DIGEST}"}
    charts = {"soundmind-serving": f"ghcr.io/o/charts/soundmind-serving@{DIGEST}"}
    skipped = {"server": "no tarball at /c/server.tar"}
    keyless = release.notes(images, charts, skipped, release.Signer(None))
    assert f"`ghcr.io/o/soundmind-operator@{DIGEST}`" in keyless
    assert f"helm install soundmind-serving oci://ghcr.io/o/charts/soundmind-serving --version {VERSION}" in keyless
    assert "soundmind-server: skipped (no tarball at /c/server.tar)" in keyless
    assert "--certificate-oidc-issuer https://token.actions.githubusercontent.com" in keyless
    assert f"--certificate-identity {release.SOURCE_URL}/.github/workflows/release.yaml@refs/tags/v{VERSION}" in keyless
    keyed = release.notes(images, charts, {}, release.Signer(Path("/k/cosign.key")))
    assert (
        f"cosign verify --key /k/cosign.pub --insecure-ignore-tlog=true ghcr.io/o/soundmind-operator@{DIGEST}" in keyed
    )
    assert "cosign verify-attestation --type spdxjson --key /k/cosign.pub" in keyed


def test_keyless_verification_names_this_repositorys_workflow_at_this_tag_exactly():
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_REF": "refs/tags/v9.0.0"}
    identity = release.keyless_identity(github)
    assert identity == "https://github.com/o/r/.github/workflows/release.yaml@refs/tags/v9.0.0"
