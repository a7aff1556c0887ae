"""API clients for one cluster, as handed to tests by the ``kube`` fixture."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException


@dataclass
class Kube:
    kubeconfig: Path
    api_client: client.ApiClient
    core_v1: client.CoreV1Api
    apps_v1: client.AppsV1Api
    batch_v1: client.BatchV1Api
    rbac_v1: client.RbacAuthorizationV1Api
    custom_objects: client.CustomObjectsApi
    apiextensions_v1: client.ApiextensionsV1Api
    kubectl_path: Path | None

    @classmethod
    def connect(cls, kubeconfig: Path, kubectl: Path | None = None) -> Kube:
        """Clients for ``kubeconfig`` (its current context); the process-wide default client
        configuration is left alone. ``kubectl`` defaults to the one on PATH."""
        api = config.new_client_from_config(config_file=str(kubeconfig))
        found = kubectl if kubectl and kubectl.exists() else shutil.which("kubectl")
        return cls(
            kubeconfig=kubeconfig,
            api_client=api,
            core_v1=client.CoreV1Api(api),
            apps_v1=client.AppsV1Api(api),
            batch_v1=client.BatchV1Api(api),
            rbac_v1=client.RbacAuthorizationV1Api(api),
            custom_objects=client.CustomObjectsApi(api),
            apiextensions_v1=client.ApiextensionsV1Api(api),
            kubectl_path=Path(found) if found else None,
        )

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """A raw API call (``path`` with its query string, JSON ``body``) returning the HTTP status and
        body, whatever the status; OSError when the server cannot be reached. The shape
        :class:`tests.support.localcluster.SimulatedNodes` talks to a cluster through."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        serialized = self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self.api_client.call_api(*serialized, _request_timeout=10)
        except ApiException as error:  # TLS failures come as status 0
            if error.status:
                text = error.body or b""
                return error.status, text.encode() if isinstance(text, str) else text
            raise OSError(f"{method} {self.api_client.configuration.host}{path}: {error.reason}") from error
        except urllib3.exceptions.HTTPError as error:
            raise OSError(f"{method} {self.api_client.configuration.host}{path}: {error}") from error
        return response.status, response.read()

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with kubectl's stderr when ``check`` and it fails."""
        if self.kubectl_path is None:
            raise RuntimeError("no kubectl: build it with hack/tools.sh or put one on PATH")
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result


POD_GROUPS = "/apis/scheduling.k8s.io/v1beta1"


def serves_pod_groups(kube: Kube) -> bool:
    """Whether the cluster serves Kubernetes' gang scheduling PodGroups (GenericWorkload is on)."""
    status, body = kube.request("GET", POD_GROUPS)
    return status == 200 and b'"podgroups"' in body


def exists(read) -> bool:
    """Whether ``read()`` finds its object (a 404 means no; other API errors propagate)."""
    try:
        return bool(read())
    except ApiException as error:
        if error.status == 404:
            return False
        raise


def read_or_none(read):
    """``read()``'s object, or None when it is not there (404); other API errors propagate."""
    try:
        return read()
    except ApiException as error:
        if error.status == 404:
            return None
        raise
