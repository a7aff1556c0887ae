"""The operator's Kubernetes API access: one client, and the idempotent verbs reconcilers use.

Children are written with server-side apply under the field manager `soundmind-operator`, forcing
the fields it owns: applying the same manifest twice changes nothing, a deleted child comes back,
and a changed builder (an operator upgrade, a spec change) reaches objects that exist. A training's
Job is the exception: each attempt's Job is created once (its pod template is immutable) and only
its mutable fields are patched. "Not found" on delete is success.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from soundmind_operator.labels import OPERATOR_NAME

Manifest = dict[str, Any]

FIELD_MANAGER = OPERATOR_NAME
REQUEST_TIMEOUT_SECONDS = 30

# Plural resource names of the kinds the operator writes, by kind.
PLURALS = {
    "ConfigMap": "configmaps",
    "ServiceAccount": "serviceaccounts",
    "Service": "services",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Job": "jobs",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "ServiceMonitor": "servicemonitors",
    "PodGroup": "podgroups",
}


class Conflict(Exception):
    """The object changed since it was read (HTTP 409 on an update); read again and retry."""


class Invalid(Exception):
    """The API server refused a child as invalid (HTTP 422), with its message naming the field:
    the same manifest, built from the same spec, is refused again."""


# The Priority admission plugin refuses a child whose priorityClassName names no PriorityClass with
# 403, not 422 (a training's PodGroup, from spec.resources.priorityClassName: a typo, mostly). It
# is refused again on every pass, as an invalid child is; other 403s (RBAC, quota) are not the spec's.
_NO_PRIORITY_CLASS = "no PriorityClass with name"


def _refused(error: ApiException, kind: str, name: str) -> Exception:
    """`Invalid` for a 422 or a missing PriorityClass (the API server's message), else the error itself."""
    if error.status not in (403, 422):
        return error
    try:
        message = json.loads(error.body or "{}").get("message") or ""
    except ValueError:
        message = ""
    if error.status == 403 and _NO_PRIORITY_CLASS not in message:
        return error
    return Invalid(message or f"{kind} {name} is invalid (HTTP 422)")


# json.dumps writes a character outside Unicode's Basic Multilingual Plane (an emoji, say) as a
# UTF-16 surrogate pair (\ud83d\ude00): valid JSON, but the API server reads a server-side apply
# body as YAML, whose decoder refuses such an escape (HTTP 400 "invalid Unicode character escape
# code"), and a serving with one anywhere in its spec failed every pass. Those characters are
# printable in YAML: they go raw (UTF-8) instead. A pair is an escape only when the backslash
# before its "u" is not itself escaped (an even run of backslashes before it, or none).
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _joined_pair(match: re.Match[str]) -> str:
    high, low = int(match[2], 16) - 0xD800, int(match[3], 16) - 0xDC00
    return match[1] + chr(0x10000 + (high << 10) + low)


def apply_body(manifest: Manifest) -> bytes:
    """`manifest` as a server-side apply body: JSON (YAML's subset) that YAML decoders accept."""
    return _SURROGATE_PAIR.sub(_joined_pair, json.dumps(manifest)).encode()


def api_client(connections: int = 32) -> client.ApiClient:
    """In a pod: its ServiceAccount. Elsewhere: the current context of $KUBECONFIG (or ~/.kube/config).
    `connections`: kept open to the API server, one per pass thread."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


def _custom_path(group: str, version: str, namespace: str, plural: str, name: str) -> str:
    return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    """The REST path of a namespaced object (or its collection, without `name`)."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{path}/{name}" if name else path


def _uncounted(verb: str) -> None:
    pass


@dataclass
class Kube:
    api: client.ApiClient
    # Called with the HTTP method of every request (the operator's metrics count them).
    on_request: Callable[[str], None] = _uncounted
    _journal: threading.local = field(default_factory=threading.local, repr=False)

    @contextlib.contextmanager
    def journal(self) -> Iterator[set[str]]:
        """The resourceVersions this thread's writes produce until the block ends (a pass's own
        writes: their watch events are no news to it)."""
        written: set[str] = set()
        self._journal.written = written
        try:
            yield written
        finally:
            self._journal.written = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: list[tuple[str, Any]] | None = None,
    ) -> Manifest:
        """One API call; the response body as a dict. ApiException on any non-2xx status."""
        self.on_request(method)
        serialized = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        result = json.loads(data) if data else {}
        written = getattr(self._journal, "written", None)
        if method != "GET" and written is not None and isinstance(result, dict):
            if version := (result.get("metadata") or {}).get("resourceVersion"):
                written.add(version)
        return result

    def apply(self, namespace: str, manifest: Manifest) -> Manifest:
        """Server-side apply: create, or bring the fields we own back to the manifest."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], namespace, meta["name"])
        try:
            return self.request(
                "PATCH",
                path,
                apply_body({**manifest, "metadata": {**meta, "namespace": namespace}}),
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            )
        except ApiException as error:
            raise _refused(error, manifest["kind"], meta["name"]) from None

    def create(self, namespace: str, manifest: Manifest) -> bool:
        """Create it; False when it already exists (same deterministic name: created before)."""
        path = resource_path(manifest["apiVersion"], manifest["kind"], namespace)
        try:
            self.request("POST", path, manifest, query=[("fieldManager", FIELD_MANAGER)])
        except ApiException as error:
            if error.status == 409:
                return False
            raise _refused(error, manifest["kind"], manifest["metadata"]["name"]) from None
        return True

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete it, and in the background what it owns (a Job's pods); False when already gone."""
        try:
            self.request(
                "DELETE", resource_path(api_version, kind, namespace, name), {"propagationPolicy": "Background"}
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest) -> None:
        self.request(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            patch,
            content_type="application/merge-patch+json",
            query=[("fieldManager", FIELD_MANAGER)],
        )

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Manifest]:
        path = resource_path(api_version, kind, namespace)
        return self.request("GET", path, query=[("labelSelector", label_selector)])["items"]

    def get_custom(self, group: str, version: str, namespace: str, plural: str, name: str) -> Manifest | None:
        try:
            return self.request("GET", _custom_path(group, version, namespace, plural, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_custom_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, resource_version: str, status: Manifest
    ) -> Manifest:
        """Merge-patch `status` (only the given fields), refused with Conflict if the object moved
        past `resource_version`: the fields were decided from that version. Returns the object."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return self.request(
                "PATCH",
                _custom_path(group, version, namespace, plural, name) + "/status",
                body,
                content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"{plural}/{name} in {namespace} changed while reconciling") from None
            raise

    def served_versions(self, group: str) -> list[str]:
        """The versions of an API group the server serves, preferred first; [] when it serves none
        (its CRDs are not installed). Asked once at start-up, never on a reconcile pass."""
        try:
            found = self.request("GET", f"/apis/{group}")
        except ApiException as error:
            if error.status == 404:
                return []
            raise
        preferred = (found.get("preferredVersion") or {}).get("version")
        versions = [v["version"] for v in found.get("versions") or []]
        return sorted(versions, key=lambda v: v != preferred)

    def serves(self, group: str, version: str, plural: str) -> bool:
        """Whether `group/version` serves the resource `plural`."""
        try:
            found = self.request("GET", f"/apis/{group}/{version}")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return any(r.get("name") == plural for r in found.get("resources") or [])
