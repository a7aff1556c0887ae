"""What every pod the operator makes has in common, decided once: the security context, GPU
resources, placement, shared memory, volumes from claims, and the Hugging Face token (only ever
through a secretKeyRef). Pure functions returning manifest fragments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from soundmind.api.base import SecretKeyRef, Toleration

Manifest = dict[str, Any]

ENV_HF_TOKEN = "HF_TOKEN"  # what huggingface_hub reads


def pod_security_context(uid: int) -> Manifest:
    """Run as the image's numeric non-root user; volumes are made group-writable for it."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    return {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]}}


def gpu_resources(gpu_resource: str, gpus: int, cpu: str, memory: str) -> Manifest:
    """Extended resources (GPUs) need limits equal to requests; CPU is left burstable."""
    return {
        "requests": {gpu_resource: str(gpus), "cpu": cpu, "memory": memory},
        "limits": {gpu_resource: str(gpus), "memory": memory},
    }


def placement(node_selector: dict[str, str], tolerations: Sequence[Toleration], priority_class: str = "") -> Manifest:
    """The pod-spec fields that decide where it may run (only those that are set)."""
    fields: Manifest = {}
    if node_selector:
        fields["nodeSelector"] = dict(node_selector)
    if tolerations:
        fields["tolerations"] = [t.to_api() for t in tolerations]
    if priority_class:
        fields["priorityClassName"] = priority_class
    return fields


def shm_volume(name: str, size: str) -> Manifest:
    """NCCL (and Ray's object store) live in /dev/shm; the container default (64Mi) is far too small."""
    return {"name": name, "emptyDir": {"medium": "Memory", "sizeLimit": size}}


def claim_volume(name: str, claim: str, *, read_only: bool = False) -> Manifest:
    source: Manifest = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": name, "persistentVolumeClaim": source}


def hf_token_env(secret: SecretKeyRef | None) -> list[Manifest]:
    if secret is None:
        return []
    return [{"name": ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}]
