"""A private registry for images and charts beside the local cluster: the CNCF distribution registry
(hack/tools.sh builds it), as a user's cluster meets one.

* HTTPS only, with a certificate of the cluster's CA for the host side of the real node's veth
  (``NodeNetwork.host_ip``); clients trust that CA: containerd on the real node through its
  registry host configuration (:meth:`RealNode.trust_registry`), skopeo and helm by flag.
* A password: htpasswd auth (bcrypt, written by ``htpasswd`` of apache2-utils) with one user whose
  password is made for the run. Nothing is readable without it, so a pod needs an imagePullSecret.
* It listens on ``host_ip`` alone: this machine reaches that address, and so does the real node's
  network namespace through the veth; it is on no other interface, and the host forwards nothing.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.localcluster import LocalCluster, _free_port
from tests.support.pki import CertPair, issue_leaf
from tests.support.poll import wait_for
from tests.support.prerequisite import missing
from tests.support.processes import LocalProcess

BINARY = "registry"  # hack/tools.sh
USERNAME = "soundmind-test"
REALM = "soundmind-test-registry"


@dataclass(frozen=True)
class Registry:
    host: str  # host:port, as image references and containerd's hosts.toml name it
    ca: Path  # the CA its certificate is signed by (the cluster's)
    username: str
    password: str
    process: LocalProcess

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def reference(self, repository: str, digest: str) -> str:
        return f"{self.host}/{repository}@{digest}"

    def docker_config(self) -> str:
        """A ``kubernetes.io/dockerconfigjson`` Secret's ``.dockerconfigjson``: this user on this host."""
        auth = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return json.dumps({"auths": {self.host: {"username": self.username, "password": self.password, "auth": auth}}})

    def status_of(self, path: str, *, authenticated: bool = True) -> int:
        """The HTTP status of a GET of ``path`` (e.g. ``/v2/``), as this user or as no one."""
        request = urllib.request.Request(self.url + path)
        if authenticated:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca))
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


def config(address: str, directory: Path, certificate: CertPair, htpasswd: Path) -> dict:
    """The registry's configuration: files under ``directory``, TLS, htpasswd auth, ``address`` only."""
    return {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(directory / "storage")},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": address,
            "tls": {"certificate": str(certificate.cert), "key": str(certificate.key)},
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}},
    }


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """A bcrypt htpasswd file with one user (apache2-utils' htpasswd; the password on stdin)."""
    program = shutil.which("htpasswd")
    if program is None:
        missing("htpasswd is missing: run hack/apt.sh (apache2-utils)")
    command = [program, "-B", "-i", "-c", str(path), username]  # -i: the password from stdin, not argv
    done = subprocess.run(command, input=password, text=True, capture_output=True)
    if done.returncode != 0:
        raise AssertionError(f"htpasswd could not write {path}: {done.stderr.strip()}")


@contextmanager
def running_registry(cluster: LocalCluster, bin_dir: Path, directory: Path) -> Iterator[Registry]:
    """The registry, serving on the host side of ``cluster``'s real node until the block ends."""
    if cluster.real_node is None:
        missing("the registry listens where the real node reaches it: this session's local cluster has none")
    address = cluster.real_node.network.host_ip
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertPair(cluster.pki_dir / "ca.crt", cluster.pki_dir / "ca.key")
    certificate = issue_leaf(ca, directory, "registry", "soundmind-test-registry", (address,))
    password = secrets.token_urlsafe(24)
    htpasswd = directory / "htpasswd"
    write_htpasswd(htpasswd, USERNAME, password)
    host = f"{address}:{_free_port(address)}"
    config_file = directory / "config.yml"
    config_file.write_text(yaml.safe_dump(config(host, directory, certificate, htpasswd), sort_keys=False))
    # No OpenTelemetry exporter: distribution v3 otherwise sends its traces to localhost:4318.
    process = LocalProcess(
        "registry",
        [str(bin_dir / BINARY), "serve", str(config_file)],
        directory / "registry.log",
        env={"OTEL_TRACES_EXPORTER": "none"},
    ).start()
    registry = Registry(host, ca.cert, USERNAME, password, process)
    try:

        def serving() -> bool:
            process.check("starting")
            try:
                return registry.status_of("/v2/", authenticated=False) == 401
            except OSError:
                return False

        wait_for(serving, timeout=30, interval=0.1, what=f"the registry answering on {registry.url}")
        yield registry
    finally:
        process.stop()
