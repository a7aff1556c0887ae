"""The operator's Kubernetes API access: one client, and the idempotent verbs reconcilers use.

"Already exists" on create and "not found" on delete are success: a reconcile that runs twice, or
after a restart, converges instead of failing. Lists come back as plain camelCase dicts (the wire
form), which is what the pure status code reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

Manifest = dict[str, Any]


class Conflict(Exception):
    """The object changed since it was read (HTTP 409 on an update); read again and retry."""


def api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount. Elsewhere: the current context of $KUBECONFIG (or ~/.kube/config)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config()


@dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self._creators: dict[str, Callable[[str, Manifest], Any]] = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "ServiceAccount": self.core.create_namespaced_service_account,
            "Service": self.core.create_namespaced_service,
            "Role": self.rbac.create_namespaced_role,
            "RoleBinding": self.rbac.create_namespaced_role_binding,
            "Job": self.batch.create_namespaced_job,
        }

    def create(self, namespace: str, manifest: Manifest) -> bool:
        """Create it; False when it already exists (same deterministic name: created before)."""
        try:
            self._creators[manifest["kind"]](namespace, manifest)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and, in the background, its pods; False when it was already gone."""
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def patch_job_spec(self, namespace: str, name: str, spec: Manifest) -> None:
        self.batch.patch_namespaced_job(name, namespace, {"spec": spec})

    def list_dicts(self, lister: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Manifest]:
        """A list call's items as wire dicts (no model round trip)."""
        response = lister(*args, _preload_content=False, **kwargs)
        return json.loads(response.data)["items"]

    def get_custom(self, group: str, version: str, namespace: str, plural: str, name: str) -> Manifest | None:
        try:
            return self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_custom_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, resource_version: str, status: Manifest
    ) -> None:
        """Merge-patch `status` (only the given fields), refused with Conflict if the object moved
        past `resource_version`: the fields were decided from that version."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            self.custom.patch_namespaced_custom_object_status(group, version, namespace, plural, name, body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"{plural}/{name} in {namespace} changed while reconciling") from None
            raise
