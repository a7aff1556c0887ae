"""The local cluster's real node (tests/support/realnode.py): a kubelet on containerd that runs pods
for real beside kwok's simulated GPU nodes, their network on this machine only, kube-proxy's
Services, and a teardown that leaves nothing behind.

Pods here run the busybox image every real node has (``realnode.BUSYBOX_IMAGE``): ``httpd`` serves,
``wget`` and ``nc`` are the clients. busybox's TLS cannot talk to the API server (no cipher suite
in common), so the path pod -> ``kubernetes`` Service -> API server is proven by the API server's
own answer to plain HTTP on its TLS port, and the pod's ServiceAccount token by a TokenReview of it
from here; an authenticated call from inside a pod is left to a test with a Python image.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration import on_real_node
from tests.support import realnode, sim
from tests.support.kube import Kube, read_or_none
from tests.support.localcluster import LocalCluster, default_bin_dir
from tests.support.oci_archive import LayerFile, write_image_archive
from tests.support.poll import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ON_REAL_NODE = {realnode.REAL_NODE_LABEL: "true"}


cluster, kube = on_real_node.fixtures()


def busybox_pod(name: str, script: str, *, port: int | None = None, labels: dict | None = None, image=None) -> dict:
    container = {
        "name": "main",
        "image": image or realnode.BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",  # imported into the node's containerd: there is no registry
        "command": ["sh", "-c", script],
    }
    if port:
        container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeSelector": ON_REAL_NODE,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def run_pod(kube: Kube, namespace: str, manifest: dict, until: str = "Running", timeout: float = 60):
    """Create the pod and return it once it is Ready (``until="Running"``) or has ended (``"Succeeded"``)."""
    name = manifest["metadata"]["name"]
    kube.core_v1.create_namespaced_pod(namespace, manifest)

    def reached():
        pod = kube.core_v1.read_namespaced_pod(name, namespace)
        if pod.status.phase == "Failed" or (until == "Running" and pod.status.phase == "Succeeded"):
            raise AssertionError(f"pod {name} ended {pod.status.phase}: {logs(kube, namespace, name)}")
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod if pod.status.phase == until and (until != "Running" or ready) else None

    return wait_for(reached, timeout=timeout, what=f"pod {namespace}/{name} {until}")


def logs(kube: Kube, namespace: str, name: str) -> str:
    """The container's log, read through the API server from the kubelet."""
    return kube.core_v1.read_namespaced_pod_log(name, namespace)


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def web_server(kube: Kube, namespace: str, name: str = "web") -> tuple[object, str]:
    """A busybox httpd pod serving a page that names it, behind a ClusterIP Service; (pod, ClusterIP)."""
    script = f"mkdir /www && echo hello from {name} > /www/index.html && exec httpd -f -p 8080 -h /www"
    pod = run_pod(kube, namespace, busybox_pod(name, script, port=8080, labels={"app": name}))
    service = kube.core_v1.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    return pod, service.spec.cluster_ip


def test_real_node_is_ready_beside_the_simulated_ones_and_kwok_leaves_it_alone(kube: Kube, cluster: LocalCluster):
    node = kube.core_v1.read_node(realnode.NODE_NAME)

    assert node.metadata.labels[realnode.REAL_NODE_LABEL] == "true"
    assert sim.MANAGED_NODE_LABEL not in node.metadata.labels
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert sim.GPU_RESOURCE not in (node.status.capacity or {})
    # Status written by the kubelet on containerd (kwok, managing a node, would write its own).
    assert node.status.node_info.kubelet_version == "v1.37.2"
    assert node.status.node_info.container_runtime_version.startswith("containerd://1.6.")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == cluster.real_node.network.node_ip
    # Its heartbeat: the kubelet's Lease (created just after the node registers).
    leases = client.CoordinationV1Api(kube.api_client)
    lease = wait_for(
        lambda: read_or_none(lambda: leases.read_namespaced_lease(realnode.NODE_NAME, "kube-node-lease")),
        what="the real node's Lease",
    )
    assert lease.spec.holder_identity == realnode.NODE_NAME
    simulated = kube.core_v1.list_node(label_selector=f"{sim.MANAGED_NODE_LABEL}=true").items
    assert len(simulated) >= sim.DEFAULT_NODE_COUNT
    assert all(n.status.node_info.kubelet_version.startswith("kwok") for n in simulated)


def test_pod_runs_its_container_for_real_and_its_log_and_exec_go_through_the_kubelet(kube: Kube, namespace: str):
    script = 'echo "$POD_UID" > /tmp/proof && echo "wrote $(cat /tmp/proof) as $(id -u)" && exec sleep 3600'
    manifest = busybox_pod("worker", script)
    manifest["spec"]["containers"][0]["env"] = [
        {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}
    ]

    pod = run_pod(kube, namespace, manifest)

    assert pod.spec.node_name == realnode.NODE_NAME
    assert pod.status.container_statuses[0].container_id.startswith("containerd://")
    uid = pod.metadata.uid
    written = wait_for(lambda: logs(kube, namespace, "worker"), timeout=20, what="the pod's log")
    assert written == f"wrote {uid} as 0\n"
    # exec: API server -> kubelet -> containerd's streaming server, inside the running container.
    assert kube.kubectl("exec", "-n", namespace, "worker", "--", "cat", "/tmp/proof").stdout.strip() == uid


def test_pod_ip_and_cluster_ip_answer_from_the_host_from_another_pod_and_from_the_pod_itself(
    kube: Kube, namespace: str, cluster: LocalCluster
):
    pod, cluster_ip = web_server(kube, namespace)
    network = cluster.real_node.network
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(network.pod_cidr)
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(network.service_cidr)

    assert http_get(f"http://{pod.status.pod_ip}:8080/") == "hello from web\n"
    # kube-proxy programs the Service a moment after its endpoints appear.
    wait_for(lambda: _answers(f"http://{cluster_ip}/"), timeout=20, what=f"Service web at {cluster_ip} from the host")
    assert http_get(f"http://{cluster_ip}/") == "hello from web\n"

    client_pod = busybox_pod("client", f"wget -q -O- http://{cluster_ip}/ && wget -q -O- http://$WEB_SERVICE_HOST/")
    run_pod(kube, namespace, client_pod, until="Succeeded")
    assert logs(kube, namespace, "client") == "hello from web\nhello from web\n"
    # Through its own Service back to itself: the bridge's hairpin mode and br_netfilter.
    hairpin = kube.kubectl("exec", "-n", namespace, "web", "--", "wget", "-q", "-O-", f"http://{cluster_ip}/")
    assert hairpin.stdout == "hello from web\n"


def _answers(url: str) -> bool:
    try:
        http_get(url)
    except OSError:
        return False
    return True


def test_pod_reaches_the_api_server_through_the_kubernetes_service_with_a_token_it_accepts(
    kube: Kube, namespace: str, cluster: LocalCluster
):
    script = (
        'echo "$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
        'printf "GET /version HTTP/1.0\\r\\n\\r\\n" | nc -w 5 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT"; '
        "exec sleep 3600"
    )
    run_pod(kube, namespace, busybox_pod("caller", script))

    kubernetes = kube.core_v1.read_namespaced_service("kubernetes", "default")
    assert kubernetes.spec.cluster_ip == cluster.kubernetes_service_ip
    endpoints = kube.core_v1.read_namespaced_endpoints("kubernetes", "default")
    assert endpoints.subsets[0].addresses[0].ip == cluster.real_node.network.host_ip

    def answered():
        text = logs(kube, namespace, "caller")
        return text if "HTTPS server" in text else None

    text = wait_for(answered, timeout=20, what="the API server's answer in the pod's log")
    assert text.startswith(f"{kubernetes.spec.cluster_ip}:443\n"), text
    # Go's TLS listener answers plain HTTP so: the API server itself, reached through the Service.
    assert "Client sent an HTTP request to an HTTPS server." in text

    def pod_file(name: str) -> str:
        path = f"/var/run/secrets/kubernetes.io/serviceaccount/{name}"
        return kube.kubectl("exec", "-n", namespace, "caller", "--", "cat", path).stdout

    review = client.AuthenticationV1Api(kube.api_client).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=pod_file("token")))
    )
    assert review.status.authenticated, review.status
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"
    # The controller manager publishes the cluster's CA as kube-root-ca.crt into every namespace.
    assert pod_file("ca.crt") == (cluster.pki_dir / "ca.crt").read_text()


def test_imported_image_archive_runs_on_the_real_node(kube: Kube, namespace: str, cluster: LocalCluster, tmp_path):
    image = "soundmind-import-test:dev"
    archive = write_image_archive(
        tmp_path / "image.tar",
        image,
        [LayerFile("bin/busybox", realnode.BUSYBOX), LayerFile("bin/sh", link="busybox")],
        ["/bin/busybox", "echo", "imported image runs"],
    )

    cluster.import_images([archive])

    pod = busybox_pod("imported", "", image=image)
    del pod["spec"]["containers"][0]["command"]  # the image's own entrypoint
    run_pod(kube, namespace, pod, until="Succeeded")
    assert logs(kube, namespace, "imported") == "imported image runs\n"


# -- teardown: nothing of a stopped (or abandoned) cluster stays on the machine -----------------


def start_with_a_pod() -> LocalCluster:
    """A private cluster with the real node only and a busybox pod running there (so that
    containerd has a shim, a container, mounts and a pod network namespace)."""
    cluster = LocalCluster.start(default_bin_dir(), nodes=0, kwok=False)
    status, body = cluster._request("POST", "/api/v1/namespaces/default/pods", busybox_pod("sleeper", "sleep 3600"))
    assert status == 201, body

    def running() -> bool:
        pod = cluster._get("/api/v1/namespaces/default/pods/sleeper") or {}
        return pod.get("status", {}).get("phase") == "Running"

    wait_for(running, timeout=60, what="the private cluster's pod Running")
    return cluster


# What a killed pytest leaves: an owner SIGKILLed while its cluster's pod runs. It prints the
# cluster's directory and slot, then waits to be killed.
_DOOMED_OWNER = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from {Path(__file__).stem} import start_with_a_pod
cluster = start_with_a_pod()
print(cluster.workdir, cluster.real_node.network.slot, flush=True)
time.sleep(3600)
"""


def test_stop_leaves_nothing_of_the_real_node():
    cluster = start_with_a_pod()
    node = cluster.real_node
    sandboxes = node.sandboxes()
    assert sandboxes and node.leftovers(), "a running node has processes, mounts, cgroups and a network"

    cluster.stop()

    assert node.leftovers() == []
    assert not cluster.workdir.exists()
    assert not [result for s in sandboxes for result in Path("/var/lib/cni/results").glob(f"*-{s}-*")]


def test_the_next_start_removes_what_a_killed_owner_left():
    owner = subprocess.Popen(
        [sys.executable, "-c", _DOOMED_OWNER], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = owner.stdout.readline()
    finally:
        owner.send_signal(signal.SIGKILL)
        _, stderr = owner.communicate(timeout=30)
    assert line, f"the owner did not start its cluster: {stderr[-3000:]}"
    workdir, slot = line.split()
    node = realnode.RealNode(Path(workdir), realnode.NodeNetwork(int(slot)))

    def only_runtime_left() -> list[str]:
        """The components died with their owner; containerd's shims and the containers did not."""
        left = node.leftovers()
        components = [item for item in left if item.startswith("process") and "containerd-shim" not in item]
        return [] if components else left

    left = wait_for(only_runtime_left, timeout=20, what="the killed owner's components gone")
    assert any("containerd-shim" in item for item in left), left
    assert any(item.startswith("mount") for item in left), left

    LocalCluster.start(default_bin_dir(), nodes=0, kwok=False, real_node=False).stop()

    assert node.leftovers() == []
    assert not Path(workdir).exists()
