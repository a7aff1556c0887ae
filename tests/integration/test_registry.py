"""Delivery as a user's cluster gets it: images and charts from a private registry, pulled by digest.

The registry is the CNCF distribution registry on this machine (tests/support/registry.py): HTTPS
from the cluster's CA, a password, on the host side of the real node's veth. The images `make images`
built are pushed into it as `make push` pushes them (skopeo), and both charts as OCI artifacts
(`helm package`, `helm push`). The real node's containerd trusts the registry through its host
configuration (certs.d/<host:port>/ with the CA); nothing here is `ctr import`ed.

* The operator chart, installed from its OCI reference, runs the operator image pulled by digest
  with an imagePullSecret. Without the secret, or with a wrong digest, its Deployment has no
  available replica and its pod says why, naming the image.
* The serving chart, from its OCI reference, serves the stand-in image pulled by digest (the
  namespace's default ServiceAccount carries the pull secret, as Kubernetes gives pods theirs).
  Without the secret, or with a wrong digest, the SoundMindServing is Degraded with ImagePullBackOff
  and the image in its message.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hack.images.build import build
from hack.push import push
from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.version import VERSION as RELEASE_VERSION
from soundmind_operator.serving import names as serving_names
from tests.integration import on_real_node
from tests.support import operator as op
from tests.support import realnode, resources
from tests.support.extended_resources import TEST_GPU, advertised
from tests.support.kube import Kube
from tests.support.localcluster import default_bin_dir
from tests.support.poll import wait_for
from tests.support.registry import Registry
from tests.unit.charts.helm import CHARTS, build_dependencies, helm

pytestmark = pytest.mark.integration

RELEASE, RELEASE_NAMESPACE = "from-registry", "soundmind-from-registry"
PULL_SECRET = "registry-login"
HOSTNAME_LABEL = "kubernetes.io/hostname"
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff")  # the kubelet alternates between the two
WRONG_DIGEST = "sha256:" + "0" * 64


cluster, kube = on_real_node.fixtures()


@pytest.fixture(scope="module")
def images(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The operator and stand-in images pushed as `make push` pushes them: their references by digest."""
    build(["operator", "standin"])
    work = tmp_path_factory.mktemp("push")
    authfile = work / "auth.json"
    authfile.write_text(registry.docker_config())
    certs = work / "certs"
    certs.mkdir()
    shutil.copy(registry.ca, certs / "ca.crt")
    began = time.monotonic()
    pushed = push(registry.host, ["operator", "standin"], cert_dir=certs, authfile=authfile)
    print(f"pushed in {time.monotonic() - began:.1f} s: {pushed}")
    return pushed


class OciHelm:
    """helm with its own registry login (a config file of the test's, not the user's) and the CA."""

    def __init__(self, registry: Registry, kube: Kube, directory: Path):
        self.registry, self.kube = registry, kube
        self.config = directory / "registry.json"
        self.ca = ["--ca-file", str(registry.ca)]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        login = ["--registry-config", str(self.config)]
        # Past helm's own --wait --timeout (180 s below), so that helm says what it waited for.
        return helm(*args, *login, "--kubeconfig", str(self.kube.kubeconfig), check=check, timeout=240)

    def login(self) -> None:
        login = [str(default_bin_dir() / "helm"), "registry", "login", self.registry.host, *self.ca]
        login += ["--registry-config", str(self.config), "--username", self.registry.username, "--password-stdin"]
        subprocess.run(login, input=self.registry.password, text=True, check=True, capture_output=True, timeout=60)

    def chart(self, name: str) -> str:
        return f"oci://{self.registry.host}/charts/{name}"


@pytest.fixture(scope="module")
def oci_helm(registry: Registry, kube: Kube, tmp_path_factory: pytest.TempPathFactory) -> OciHelm:
    """Both charts packaged and pushed to oci://<registry>/charts, and helm logged in to pull them."""
    work = tmp_path_factory.mktemp("charts")
    oci = OciHelm(registry, kube, work)
    oci.login()
    build_dependencies()  # the operator chart carries the CRD chart
    for name in ("soundmind-operator", "soundmind-serving"):
        helm("package", str(CHARTS / name), "--destination", str(work))
        pushed = oci("push", str(work / f"{name}-{RELEASE_VERSION}.tgz"), f"oci://{registry.host}/charts", *oci.ca)
        print(pushed.stderr.strip())
    return oci


def create_pull_secret(kube: Kube, namespace: str, registry: Registry) -> None:
    secret = {
        "metadata": {"name": PULL_SECRET},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": registry.docker_config()},
    }
    kube.core_v1.create_namespaced_secret(namespace, secret)


def pull_failure(kube: Kube, namespace: str, selector: str, image: str, timeout: float = 120):
    """The waiting state of a container of a pod of ``selector`` that cannot pull ``image``."""

    def failing():
        for pod in kube.core_v1.list_namespaced_pod(namespace, label_selector=selector).items:
            for container in pod.status.container_statuses or []:
                waiting = container.state.waiting
                if waiting and waiting.reason in PULL_FAILURES and image in (waiting.message or ""):
                    return waiting
        return None

    return wait_for(failing, timeout=timeout, what=f"a pod of {selector} in {namespace} failing to pull {image}")


def test_the_registry_wants_its_password_and_listens_on_the_node_s_link_only(registry: Registry):
    assert registry.status_of("/v2/", authenticated=False) == 401
    assert registry.status_of("/v2/") == 200
    port = int(registry.host.rsplit(":", 1)[1])
    with socket.socket() as loopback, pytest.raises(ConnectionRefusedError):
        loopback.connect(("127.0.0.1", port))


# -- the operator chart from the registry ----------------------------------------------------------


@pytest.fixture(scope="module")
def release(kube: Kube, oci_helm: OciHelm) -> Iterator[str]:
    """The operator release's namespace; the release and the namespace go afterwards."""
    op.install_crds(kube)  # as test_in_cluster: other modules applied them with kubectl, not Helm
    kube.core_v1.create_namespace({"metadata": {"name": RELEASE_NAMESPACE}})
    yield RELEASE_NAMESPACE
    oci_helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", check=False)
    kube.kubectl("delete", "namespace", RELEASE_NAMESPACE, "--wait=false", check=False)


def install_operator(oci_helm: OciHelm, image: str, node: str, *, pull_secret: bool, wait: bool) -> None:
    """`helm upgrade --install` of the operator chart from the registry, its image by digest."""
    repository, digest = image.split("@")
    escaped = HOSTNAME_LABEL.replace(".", "\\.")
    values = [
        "--set", f"crds.enabled=false,image.repository={repository},image.digest={digest}",
        "--set-string", f"nodeSelector.{escaped}={node}",
        "--set", "operator.resyncSeconds=2,resources.requests.cpu=10m",
        "--set-json", f"imagePullSecrets={json.dumps([{'name': PULL_SECRET}] if pull_secret else [])}",
    ]  # fmt: skip
    waiting = ["--wait", "--timeout", "180s"] if wait else []
    oci_helm(
        "upgrade", "--install", RELEASE, oci_helm.chart("soundmind-operator"), "--version", RELEASE_VERSION,
        "--namespace", RELEASE_NAMESPACE, *oci_helm.ca, *values, *waiting,
    )  # fmt: skip


def operator_deployment(kube: Kube):
    return kube.apps_v1.read_namespaced_deployment(f"{RELEASE}-soundmind-operator", RELEASE_NAMESPACE)


def test_the_operator_chart_from_the_registry_runs_the_operator_pulled_by_digest(
    kube: Kube, images: dict[str, str], oci_helm: OciHelm, release: str, registry: Registry
):
    selector = f"app.kubernetes.io/instance={RELEASE}"
    image = images["operator"]
    # No pull secret: the registry refuses the kubelet, and the Deployment has no available replica.
    install_operator(oci_helm, image, realnode.NODE_NAME, pull_secret=False, wait=False)
    waiting = pull_failure(kube, release, selector, image)
    print(f"without a pull secret: {waiting.reason}: {waiting.message}")
    assert "401" in waiting.message or "unauthorized" in waiting.message.lower()
    available = next(c for c in operator_deployment(kube).status.conditions if c.type == "Available")
    assert available.status == "False" and not operator_deployment(kube).status.ready_replicas

    # The secret, and a digest the registry does not have: still none, the pod naming the image.
    create_pull_secret(kube, release, registry)
    wrong = image.split("@")[0] + "@" + WRONG_DIGEST
    install_operator(oci_helm, wrong, realnode.NODE_NAME, pull_secret=True, wait=False)
    waiting = pull_failure(kube, release, selector, wrong)
    print(f"with a wrong digest: {waiting.reason}: {waiting.message}")
    assert "not found" in waiting.message.lower()
    assert not operator_deployment(kube).status.ready_replicas

    # Both right: the pod pulls, starts and is Ready.
    install_operator(oci_helm, image, realnode.NODE_NAME, pull_secret=True, wait=True)
    (pod,) = [p for p in kube.core_v1.list_namespaced_pod(release, label_selector=selector).items
              if not p.metadata.deletion_timestamp]  # fmt: skip
    (status,) = pod.status.container_statuses
    assert pod.spec.containers[0].image == image and status.ready and status.restart_count == 0
    assert status.image_id == image  # containerd pulled it by this digest from the registry
    assert pod.spec.image_pull_secrets[0].name == PULL_SECRET


# -- servings of the stand-in image from the registry ----------------------------------------------


@pytest.fixture(scope="module")
def running_operator(
    kube: Kube, images: dict[str, str], oci_helm: OciHelm, release: str, registry: Registry
) -> Iterator[None]:
    """The operator from the registry, running (as the test above leaves it), and test GPUs on the node."""
    if not kube.core_v1.list_namespaced_secret(release, field_selector=f"metadata.name={PULL_SECRET}").items:
        create_pull_secret(kube, release, registry)
    install_operator(oci_helm, images["operator"], realnode.NODE_NAME, pull_secret=True, wait=True)
    with advertised(kube, realnode.NODE_NAME, 3):
        yield


@pytest.fixture
def serving_namespace(kube: Kube, namespace: str, running_operator) -> Iterator[str]:
    """A namespace with the volumes a serving mounts; its default ServiceAccount has no pull secret."""
    yield from op.with_volumes(kube, namespace)


def give_pods_the_pull_secret(kube: Kube, namespace: str, registry: Registry) -> None:
    """The pull secret on the namespace's default ServiceAccount: the serving's pods present it."""
    create_pull_secret(kube, namespace, registry)  # the namespace fixture waited for the ServiceAccount
    kube.core_v1.patch_namespaced_service_account("default", namespace, {"imagePullSecrets": [{"name": PULL_SECRET}]})


def standin_spec(image: str) -> dict:
    return {
        "model": "Qwen/Qwen2.5-Omni-7B",
        "image": image,
        "autoscaling": {"enabled": False},
        "replicas": 1,
        "resources": {"gpuResource": TEST_GPU, "cpu": "100m", "memory": "512Mi", "shmSize": "64Mi",
                      "nodeSelector": {HOSTNAME_LABEL: realnode.NODE_NAME}},
        "startupTimeoutSeconds": 120,
    }  # fmt: skip


def create_serving(kube: Kube, namespace: str, name: str, image: str) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": SERVING.kind, "metadata": {"name": name}}
    body["spec"] = standin_spec(image)
    kube.custom_objects.create_namespaced_custom_object(GROUP, VERSION, namespace, SERVING.plural, body)


def degraded_for_the_pull(kube: Kube, namespace: str, name: str, image: str) -> dict:
    def said(serving: dict) -> bool:
        status = serving.get("status") or {}
        progressing = resources.condition(serving, "Progressing")
        return (
            status.get("phase") == "Degraded"
            and progressing.get("reason") == "ImagePullBackOff"
            and image in progressing.get("message", "")
        )

    return resources.wait(kube, SERVING, namespace, name, said, f"Degraded, ImagePullBackOff of {image}", timeout=120)


def test_a_serving_whose_pods_lack_the_pull_secret_is_degraded_naming_the_image(
    kube: Kube, images: dict[str, str], serving_namespace: str
):
    create_serving(kube, serving_namespace, "no-secret", images["standin"])
    serving = degraded_for_the_pull(kube, serving_namespace, "no-secret", images["standin"])
    said = resources.condition(serving, "Progressing")["message"]
    print(f"without a pull secret: {said}")
    assert "401" in said or "unauthorized" in said.lower()


def test_a_serving_of_a_wrong_digest_is_degraded_naming_the_image(
    kube: Kube, images: dict[str, str], serving_namespace: str, registry: Registry
):
    give_pods_the_pull_secret(kube, serving_namespace, registry)
    wrong = images["standin"].split("@")[0] + "@" + WRONG_DIGEST
    create_serving(kube, serving_namespace, "wrong-digest", wrong)
    serving = degraded_for_the_pull(kube, serving_namespace, "wrong-digest", wrong)
    said = resources.condition(serving, "Progressing")["message"]
    print(f"with a wrong digest: {said}")
    assert "not found" in said.lower()


def test_the_serving_chart_from_the_registry_serves_the_stand_in_pulled_by_digest(
    kube: Kube, images: dict[str, str], serving_namespace: str, registry: Registry, oci_helm: OciHelm, tmp_path: Path
):
    ns = serving_namespace
    give_pods_the_pull_secret(kube, ns, registry)
    repository, digest = images["standin"].split("@")
    values = {**standin_spec(""), "image": {"repository": repository, "digest": digest}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    oci_helm(
        "install", "standin", oci_helm.chart("soundmind-serving"), "--version", RELEASE_VERSION,
        "--namespace", ns, *oci_helm.ca, "--values", str(tmp_path / "values.yaml"),
    )  # fmt: skip
    available = resources.wait(
        kube, SERVING, ns, "standin", lambda s: (s.get("status") or {}).get("phase") == "Available",
        "Available", timeout=180,
    )  # fmt: skip
    assert available["spec"]["image"] == images["standin"] and available["status"]["readyReplicas"] == 1
    (pod,) = kube.core_v1.list_namespaced_pod(ns, label_selector=serving_names.selector("standin")).items
    (status,) = pod.status.container_statuses
    assert status.image_id == images["standin"] and status.ready and status.restart_count == 0
    oci_helm("uninstall", "standin", "--namespace", ns, "--wait")
