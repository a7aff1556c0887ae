"""The test registry's plan (tests/support/registry.py), without starting it: one address, TLS,
a bcrypt password file, and the pull secret a pod presents."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.support.pki import CertPair
from tests.support.processes import LocalProcess
from tests.support.registry import Registry, config, write_htpasswd


def test_it_listens_on_one_address_with_tls_and_a_password(tmp_path: Path):
    pair = CertPair(tmp_path / "registry.crt", tmp_path / "registry.key")
    found = config("10.207.255.1:5443", tmp_path, pair, tmp_path / "htpasswd")

    assert found["http"]["addr"] == "10.207.255.1:5443"
    assert found["http"]["tls"] == {"certificate": str(pair.cert), "key": str(pair.key)}
    assert found["auth"] == {"htpasswd": {"realm": "soundmind-test-registry", "path": str(tmp_path / "htpasswd")}}
    assert Path(found["storage"]["filesystem"]["rootdirectory"]).is_relative_to(tmp_path)


def test_the_password_file_is_bcrypt(tmp_path: Path):
    write_htpasswd(tmp_path / "htpasswd", "someone", "secret words")
    user, hashed = (tmp_path / "htpasswd").read_text().strip().split(":", 1)
    assert user == "someone" and hashed.startswith("$2y$") and "secret" not in hashed


def test_the_pull_secret_names_the_host_and_the_user(tmp_path: Path):
    never_started = LocalProcess("registry", [], tmp_path / "log")
    registry = Registry("10.207.255.1:5443", tmp_path / "ca.crt", "someone", "pw", never_started)
    auths = json.loads(registry.docker_config())["auths"]
    assert list(auths) == ["10.207.255.1:5443"]
    assert base64.b64decode(auths["10.207.255.1:5443"]["auth"]).decode() == "someone:pw"
    assert registry.reference("soundmind-operator", "sha256:ab") == "10.207.255.1:5443/soundmind-operator@sha256:ab"
