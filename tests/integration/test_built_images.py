"""The images `make images` builds, run as a node runs them: loaded from the very tarballs a node
imports into a Docker engine of the test's own, with no network. Needs root, Debian's dockerd and
debootstrap; with the images cached (hack/images) this takes seconds, a cold build minutes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hack.images.build import IMAGES, ROOT, build
from hack.images.docker import Docker, Dockerd, remove_tree
from soundmind.api import vllm_metrics as metrics
from soundmind.api.serving import ServingSpec
from soundmind.version import SOURCE_URL, VERSION
from soundmind_operator.serving import builders
from tests.support import prerequisite
from tests.support.oci_archive import image_config

OPERATOR, STANDIN = IMAGES["operator"].tag, IMAGES["standin"].tag
OPERATOR_VALUES = ROOT / "charts/soundmind-operator/values.yaml"
STARTUP_SECONDS = 60


def _missing() -> list[str]:
    missing = [] if os.geteuid() == 0 else ["root"]
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    return missing + [tool for tool in ("dockerd", "debootstrap") if not shutil.which(tool, path=path)]


@pytest.fixture(scope="module")
def tarballs() -> list[Path]:
    """The operator and stand-in images' tarballs, built unless cached."""
    missing = _missing()
    if missing:
        why = f"building and running images needs {', '.join(missing)} (apt-get install docker.io debootstrap)"
        prerequisite.missing(why)
    return build(["operator", "standin"])


@pytest.fixture(scope="module")
def docker(tarballs: list[Path]) -> Iterator[Docker]:
    """A private dockerd with the operator and stand-in images loaded from their tarballs."""
    # Short: dockerd's sockets live under it, and a unix socket path has at most 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="smd-docker-", dir="/tmp"))
    try:
        with Dockerd(home) as engine:
            for tarball in tarballs:
                engine("load", f"--input={tarball}")
            yield engine
    finally:
        remove_tree(home)


def _run(docker: Docker, *args: str) -> str:
    return docker("run", "--rm", "--network=none", *args, capture=True).stdout


def test_the_images_say_where_they_come_from_in_oci_labels(tarballs: list[Path]):
    """source, version and the commit they were built at (one that builds these very images: a
    tarball is kept while its inputs are unchanged), read from the tarballs a node imports."""
    for tarball in tarballs:
        labels = image_config(tarball)["config"]["Labels"]
        assert labels["org.opencontainers.image.source"] == SOURCE_URL, tarball
        assert labels["org.opencontainers.image.version"] == VERSION, tarball
        revision = labels["org.opencontainers.image.revision"]
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", revision), (tarball, revision)
        commit = revision.removesuffix("-dirty")
        known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"])
        assert known.returncode == 0, f"{tarball}: revision {revision} is no commit of this repository"


def test_the_operator_image_runs_offline_read_only_as_the_user_its_chart_names(docker: Docker):
    """The chart's pod runs it with a read-only root file system, expecting the image's own user."""
    pod = yaml.safe_load(OPERATOR_VALUES.read_text())["podSecurityContext"]
    assert "usage: soundmind-operator" in _run(docker, "--read-only", OPERATOR, "--help")
    ids = "import os; print(os.getuid(), os.getgid())"
    user = _run(docker, "--read-only", "--entrypoint=python", OPERATOR, "-c", ids).split()
    assert user == [str(pod["runAsUser"]), str(pod["runAsGroup"])]


def test_the_operator_image_checks_verl_overrides_against_the_schema_it_ships(docker: Docker):
    """The image has no verl: the operator reads the copy of verl's config schema soundmind ships."""
    check = (
        "import importlib.util\n"
        "assert importlib.util.find_spec('verl') is None\n"
        "from soundmind.train import verl_config as v\n"
        "v.compose(['trainer.total_epochs=2'])\n"
        "try:\n"
        "    v.compose(['trainer.no_such_setting=1'])\n"
        "except v.OverrideError as error:\n"
        "    print('refused:', error)\n"
    )
    assert "refused: 'trainer.no_such_setting=1'" in _run(docker, "--entrypoint=python", OPERATOR, "-c", check)


def _serving_container(spec: ServingSpec) -> tuple[dict, dict]:
    """The container and pod security context the operator gives a serving's replicas."""
    model = builders.ModelSource(spec.model)
    pod = builders.build_deployment("alr", spec, model, builders.Platform())["spec"]["template"]["spec"]
    return pod["containers"][0], pod["securityContext"]


# Run inside the container (its network is its own): one request of each kind a serving gets.
_CLIENT = """
import json, sys, urllib.request
base = sys.argv[1]
def get(path):
    with urllib.request.urlopen(base + path, timeout=5) as response:
        return response.status, response.read().decode()
chat = {"model": sys.argv[2], "messages": [{"role": "user", "content": "Premise: all A are B. Entailed?"}]}
request = urllib.request.Request(base + "/v1/chat/completions", json.dumps(chat).encode(),
                                 {"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    answer = json.load(response)["choices"][0]["message"]["content"]
print(json.dumps({"models": json.loads(get("/v1/models")[1]), "metrics": get("/metrics")[1], "answer": answer}))
"""


def test_a_serving_pod_of_the_stand_in_image_serves_like_vllm(docker: Docker):
    """The Deployment's own command, arguments, user and probe, run in the stand-in image."""
    spec = ServingSpec.model_validate(
        {"model": "Qwen/Qwen2.5-Omni-7B", "servedModelName": "alr", "image": STANDIN, "autoscaling": {"enabled": False}}
    )
    container, security = _serving_container(spec)
    assert container["image"] == STANDIN
    command, port = container["command"], container["ports"][0]["containerPort"]
    base = f"http://127.0.0.1:{port}"
    health = base + container["readinessProbe"]["httpGet"]["path"]
    name = f"standin-{uuid.uuid4().hex[:8]}"
    user = f"--user={security['runAsUser']}:{security['runAsGroup']}"
    docker("run", "--detach", f"--name={name}", "--network=none", user, f"--entrypoint={command[0]}",
           STANDIN, *command[1:], *container["args"], capture=True)  # fmt: skip
    try:
        probe = f"import urllib.request; urllib.request.urlopen({health!r}, timeout=2)"
        give_up = time.monotonic() + STARTUP_SECONDS
        while docker("exec", name, "python", "-c", probe, capture=True, check=False).returncode != 0:
            if time.monotonic() > give_up:
                logs = docker("logs", name, capture=True, check=False)
                pytest.fail(f"{health} never answered in {STARTUP_SECONDS} s; its log:\n{logs.stdout}{logs.stderr}")
            time.sleep(0.5)
        served = json.loads(docker("exec", name, "python", "-c", _CLIENT, base, "alr", capture=True).stdout)
        assert [m["id"] for m in served["models"]["data"]] == ["alr"]
        assert served["answer"].rstrip().rsplit("\n", 1)[-1].startswith("Answer: ")
        success = f'{metrics.REQUEST_SUCCESS}{{engine="0",finished_reason="stop",model_name="alr"}} 1.0'
        assert success in served["metrics"]
        started = time.monotonic()
        docker("stop", "--time=10", name, capture=True)  # SIGTERM, as the kubelet stops a pod
        assert time.monotonic() - started < 5, "the stand-in ignored SIGTERM and was killed"
        assert f"serving http://0.0.0.0:{port}" in docker("logs", name, capture=True).stdout
    finally:
        docker("rm", "--force", name, capture=True, check=False)
