"""The watched children of every object, kept by the watches instead of LISTed on every pass.

The operator watches each kind of child it makes (filtered server-side by the managed-by label)
into a kopf index keyed by owner: (namespace, component, instance). A reconcile pass copies its
owner's entries (on the event loop's thread, where kopf updates them) into an `Owned` and reads
that. The same watch events wake the owner's loop.

It also watches, read-only, what specs refer to: every PersistentVolumeClaim (by namespace and
name) and every node, into indices of `references` views; a pass copies the claims its spec names
and all nodes into a `references.Seen`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from soundmind_operator import labels as standard
from soundmind_operator import references
from soundmind_operator.children import ChildKey

Manifest = dict[str, Any]
OwnerKey = tuple[str, str, str]  # (namespace, component, instance)


@dataclass(frozen=True)
class Watched:
    group: str
    version: str
    plural: str
    kind: str

    @property
    def index_id(self) -> str:
        """The kopf index's id, which is also the keyword it reaches handlers under."""
        return f"owned_{self.plural}"


WATCHED = (
    Watched("", "v1", "pods", "Pod"),
    Watched("", "v1", "configmaps", "ConfigMap"),
    Watched("", "v1", "serviceaccounts", "ServiceAccount"),
    Watched("", "v1", "services", "Service"),
    Watched("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Watched("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    Watched("batch", "v1", "jobs", "Job"),
    Watched("apps", "v1", "deployments", "Deployment"),
    Watched("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Watched("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    # Served only where KEDA and prometheus-operator are installed, and Kubernetes' gang scheduling
    # is on (GenericWorkload); kopf skips them elsewhere.
    Watched("scheduling.k8s.io", "v1beta1", "podgroups", "PodGroup"),
    Watched("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    Watched("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
)


def owner_key(namespace: str | None, labels: Mapping[str, str] | None) -> OwnerKey | None:
    found = standard.owner(dict(labels or {}))
    if found is None or not namespace:
        return None
    component, instance = found
    return namespace, component, instance


def trimmed(body: Mapping[str, Any]) -> Manifest:
    """A plain copy of what passes read: metadata (without managedFields), spec and status."""
    metadata = {k: v for k, v in dict(body.get("metadata") or {}).items() if k != "managedFields"}
    return {
        "kind": body.get("kind"),
        "metadata": metadata,
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


@dataclass(frozen=True)
class Owned:
    """One owner's children, by kind, as the watches last saw them."""

    by_kind: dict[str, list[Manifest]] = field(default_factory=dict)

    def of(self, kind: str) -> list[Manifest]:
        return self.by_kind.get(kind, [])

    def by_key(self) -> dict[ChildKey, Manifest]:
        """(kind, name) -> the child, for every child."""
        return {(kind, body["metadata"]["name"]): body for kind, bodies in self.by_kind.items() for body in bodies}


def read(indices: Mapping[str, Any], key: OwnerKey) -> Owned:
    """Copy one owner's entries out of the kopf indices (call on the event loop's thread)."""
    by_kind: dict[str, list[Manifest]] = {}
    for watched in WATCHED:
        index = indices.get(watched.index_id)
        if index is not None and key in index:
            by_kind[watched.kind] = list(index[key])
    return Owned(by_kind)


# The kopf indices of the referenced objects (and the keywords they reach handlers under).
CLAIMS_INDEX = "claim_views"  # (namespace, name) -> references.ClaimView
NODES_INDEX = "node_views"  # references.ALL_NODES -> references.NodeView, one per node


def referenced(indices: Mapping[str, Any], namespace: str, needs: references.Needs | None) -> references.Seen:
    """Copy the claims `needs` names (those that exist) and every node out of the kopf indices
    (call on the event loop's thread). Without needs (a spec its model refuses), nothing."""
    if needs is None:
        return references.Seen()
    found = indices[CLAIMS_INDEX]
    claims = {claim: view for _, claim in needs.claims for view in found.get((namespace, claim), ())}
    return references.Seen(claims=claims, nodes=tuple(indices[NODES_INDEX].get(references.ALL_NODES, ())))
