"""`make push` (hack/push.py) without a registry: what it tells skopeo, and bad input refused
naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack import push
from soundmind.version import VERSION


def test_skopeo_copies_the_tarball_tagged_with_the_version_and_writes_the_digest(tmp_path: Path):
    destination = f"{push.repository('registry.example:5000/team/', 'operator')}:{VERSION}"
    tarball, digest, certs, auth = tmp_path / "op.tar", tmp_path / "digest", tmp_path / "certs", tmp_path / "auth"
    command = push.copy_command(tarball, destination, digest, certs, auth)
    assert command == [
        "skopeo", "copy", "--quiet", f"--digestfile={digest}", f"--dest-cert-dir={certs}", f"--dest-authfile={auth}",
        f"docker-archive:{tarball}", f"docker://registry.example:5000/team/soundmind-operator:{VERSION}",
    ]  # fmt: skip


@pytest.mark.parametrize("registry", ["", "https://registry.example", "Registry.example", "r.example:5000/x:tag"])
def test_a_registry_that_is_no_host_and_path_is_refused_naming_it(registry: str):
    with pytest.raises(push.PushError, match=f"REGISTRY='{registry}'.*host\\[:port\\]\\[/path\\]"):
        push.push(registry)


def test_a_missing_tarball_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOUNDMIND_CACHE", str(tmp_path))
    with pytest.raises(push.PushError, match=r"image trainer: no tarball .*; run `python -m hack.images trainer`"):
        push.push("registry.example:5000", ["trainer"])


def test_an_unknown_image_is_a_usage_error(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        push.main(["registry.example:5000", "trainr"])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and "no image trainr; there are operator, standin, trainer, server" in said
