"""KEDA (operator and metrics API server, built by hack/tools.sh) as local processes against a test cluster.

What a Helm install of KEDA sets up, done by hand on loopback:

* its CRDs, from the KEDA module's ``config/crd/bases`` (:mod:`tests.support.third_party_crds`);
* ``keda-operator``: reconciles ScaledObjects into HPAs and answers metric requests over gRPC,
  mutual TLS from ``--cert-dir`` (``ca.crt``, ``tls.crt``, ``tls.key``); cert rotation off;
* ``keda-adapter``: the ``external.metrics.k8s.io`` API server the HPA controller asks, serving
  TLS with the same certificate (issued by the cluster's CA, for 127.0.0.1 and the Service's DNS
  name) and calling the operator with it as the gRPC client certificate;
* the ``v1beta1.external.metrics.k8s.io`` APIService, whose Service is of type ExternalName
  pointing at 127.0.0.1: the API server then proxies to ``https://127.0.0.1:<port>`` (Endpoints
  may not hold a loopback address; the local cluster runs with ``--enable-aggregator-routing=false``).
  It is registered only once the adapter serves, and removed before the adapter stops: an
  unavailable aggregated API breaks discovery (and with it namespace deletion) cluster-wide.

KEDA runs with the cluster's admin credentials (its own RBAC is the Helm chart's business).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.rest import ApiException

from tests.support import operator as op
from tests.support.kube import Kube, read_or_none
from tests.support.pki import CertPair, issue_leaf
from tests.support.poll import wait_for
from tests.support.processes import LocalProcess
from tests.support.third_party_crds import crd_dir, crds

BINARIES = ("keda-operator", "keda-adapter")
NAMESPACE = "keda"  # KEDA_CLUSTER_OBJECT_NAMESPACE and the metrics Service's namespace, as the chart has them
METRICS_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
_APIREG = ("apiregistration.k8s.io", "v1", "apiservices")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Keda:
    kube: Kube
    workdir: Path
    operator: LocalProcess
    adapter: LocalProcess
    adapter_port: int
    registered: bool = False

    @classmethod
    def start(
        cls, kube: Kube, bin_dir: Path, ca: CertPair, admin: CertPair, workdir: Path, timeout: float = 120
    ) -> Keda:
        """Install KEDA's CRDs, start the operator and the adapter, and register the adapter once it
        serves. ``ca`` is the cluster CA (it signs KEDA's certificate), ``admin`` a client
        certificate the adapter accepts (to ask it whether it serves)."""
        op.install_crds(kube, crd_dir("keda"))
        _create_namespace(kube, NAMESPACE)
        certs = workdir / "certs"
        pair = issue_leaf(ca, certs, "tls", "keda", ("127.0.0.1", "localhost", f"{METRICS_SERVICE}.{NAMESPACE}.svc"))
        shutil.copyfile(ca.cert, certs / "ca.crt")
        trusted = workdir / "trusted"  # --ca-dir: every file in it must be a CA certificate
        trusted.mkdir(exist_ok=True)
        shutil.copyfile(ca.cert, trusted / "ca.crt")
        kubeconfig = str(kube.kubeconfig)
        env = {"KUBECONFIG": kubeconfig, "WATCH_NAMESPACE": "", "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE}
        env["POD_NAMESPACE"] = NAMESPACE
        grpc_port, probe_port, adapter_port = _free_port(), _free_port(), _free_port()
        operator = LocalProcess(
            "keda-operator",
            [
                str(bin_dir / "keda-operator"),
                "--metrics-bind-address=0",  # off: nothing scrapes KEDA here
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
                f"--cert-dir={certs}",
                f"--ca-dir={trusted}",
                "--enable-cert-rotation=false",
                "--leader-elect=false",
            ],
            workdir / "keda-operator.log",
            env=env,
        ).start()
        adapter = LocalProcess(
            "keda-adapter",
            [
                str(bin_dir / "keda-adapter"),
                f"--secure-port={adapter_port}",
                "--bind-address=127.0.0.1",
                f"--cert-dir={certs}",
                f"--tls-cert-file={pair.cert}",
                f"--tls-private-key-file={pair.key}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--metrics-service-address=127.0.0.1:{grpc_port}",
                # Its own /metrics listens on every address (the flag takes only a port): a free one.
                f"--port={_free_port()}",
            ],
            workdir / "keda-adapter.log",
            env=env,
        )
        keda = cls(kube, workdir, operator, adapter, adapter_port)
        try:
            deadline = time.monotonic() + timeout
            keda._wait(lambda: _http_ok(f"http://127.0.0.1:{probe_port}/readyz"), "keda-operator ready", deadline)
            adapter.start()
            context = ssl.create_default_context(cafile=str(ca.cert))
            context.load_cert_chain(str(admin.cert), str(admin.key))
            readyz = f"https://127.0.0.1:{adapter_port}/readyz"
            keda._wait(lambda: _http_ok(readyz, context), "keda-adapter serving /readyz", deadline)
            keda._register(ca)
            keda._wait(
                keda._api_service_available,
                f"APIService {API_SERVICE} Available (the API server must run with "
                "--enable-aggregator-routing=false; a cluster started by an older checkout does not: restart it)",
                deadline,
            )
        except BaseException:
            keda.stop()
            raise
        return keda

    def _wait(self, condition, what: str, deadline: float) -> None:
        while not condition():
            self.operator.check(f"waiting for {what}")
            if self.adapter.process is not None:
                self.adapter.check(f"waiting for {what}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}\n--- keda-operator:\n{self.operator.log_tail(10)}"
                    f"\n--- keda-adapter:\n{self.adapter.log_tail(10)}"
                )
            time.sleep(0.2)

    def _register(self, ca: CertPair) -> None:
        import base64

        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
            "spec": {"type": "ExternalName", "externalName": "127.0.0.1"},
        }
        _create_or_replace(lambda: self.kube.core_v1.create_namespaced_service(NAMESPACE, service))
        api_service = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": API_SERVICE},
            "spec": {
                "group": "external.metrics.k8s.io",
                "version": "v1beta1",
                "service": {"namespace": NAMESPACE, "name": METRICS_SERVICE, "port": self.adapter_port},
                "caBundle": base64.b64encode(ca.cert_pem()).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        self.registered = True  # from here on, stop() removes it
        self.kube.custom_objects.create_cluster_custom_object(*_APIREG, api_service)

    def _api_service_available(self) -> bool:
        found = read_or_none(lambda: self.kube.custom_objects.get_cluster_custom_object(*_APIREG, API_SERVICE))
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)

    def stop(self) -> None:
        """Unregister the APIService (and wait until it is gone), then stop the adapter and the
        operator. KEDA's CRDs stay: :func:`uninstall_crds` removes them."""
        if self.registered:
            try:
                self.kube.custom_objects.delete_cluster_custom_object(*_APIREG, API_SERVICE)
            except ApiException as error:
                if error.status != 404:
                    raise
            wait_for(
                lambda: (
                    read_or_none(lambda: self.kube.custom_objects.get_cluster_custom_object(*_APIREG, API_SERVICE))
                    is None
                ),
                timeout=30,
                what=f"APIService {API_SERVICE} deleted",
            )
            self.registered = False
        self.adapter.stop()
        self.operator.stop()


def delete_scaled_objects(kube: Kube) -> None:
    """Delete every ScaledObject while KEDA still runs: KEDA holds a finalizer on each, which only
    it removes, so CRDs deleted after KEDA stopped would wait on them for ever."""
    found = kube.custom_objects.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects")["items"]
    for item in found:
        meta = item["metadata"]
        read_or_none(
            lambda meta=meta: kube.custom_objects.delete_namespaced_custom_object(
                "keda.sh", "v1alpha1", meta["namespace"], "scaledobjects", meta["name"]
            )
        )
    wait_for(
        lambda: not kube.custom_objects.list_cluster_custom_object("keda.sh", "v1alpha1", "scaledobjects")["items"],
        timeout=60,
        what="every ScaledObject finalized by KEDA",
    )


def uninstall_crds(kube: Kube) -> None:
    """Delete KEDA's CRDs (their objects go with them) and wait until the API no longer serves them,
    so later tests and operators see a cluster without KEDA."""
    names = [crd["metadata"]["name"] for crd in crds("keda")]
    for name in names:
        try:
            kube.apiextensions_v1.delete_custom_resource_definition(name)
        except ApiException as error:
            if error.status != 404:
                raise
    wait_for(
        lambda: all(
            read_or_none(lambda n=n: kube.apiextensions_v1.read_custom_resource_definition(n)) is None for n in names
        ),
        timeout=60,
        what="KEDA's CRDs deleted",
    )


def _create_namespace(kube: Kube, name: str) -> None:
    try:
        kube.core_v1.create_namespace({"metadata": {"name": name}})
    except ApiException as error:
        if error.status != 409:
            raise


def _create_or_replace(create) -> None:
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False
