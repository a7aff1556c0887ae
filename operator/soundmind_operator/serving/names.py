"""Deterministic names and labels of a serving's children.

The Deployment, Service, PodDisruptionBudget and autoscaler all carry the serving's own name (a
training's children carry suffixes, so the two kinds never collide in one namespace); the labels'
component (`server`) keeps their pods apart.
"""

from __future__ import annotations

from soundmind_operator import labels as standard

COMPONENT = "server"
CONTAINER_NAME = "vllm"
HTTP_PORT = 8000
HTTP_PORT_NAME = "http"
# The server image's numeric non-root user (images/server/Dockerfile; a test ties the two).
SERVER_UID = 1000

# `<name>-<pod-template-hash>` (up to 10 characters) names the ReplicaSets and pod host names: keep
# them within a DNS label.
MAX_SERVING_NAME_LENGTH = 52


def deployment(serving: str) -> str:
    return serving


def service(serving: str) -> str:
    return serving


def disruption_budget(serving: str) -> str:
    return serving


def autoscaler(serving: str) -> str:
    """The ScaledObject or the HPA (KEDA names the HPA it makes `keda-hpa-<name>`)."""
    return serving


def service_monitor(serving: str) -> str:
    return serving


def labels(serving: str) -> dict[str, str]:
    return standard.labels(serving, COMPONENT)


def match_labels(serving: str) -> dict[str, str]:
    return standard.match_labels(serving, COMPONENT)


def selector(serving: str) -> str:
    return standard.selector(serving, COMPONENT)


def url(serving: str, namespace: str) -> str:
    return f"http://{service(serving)}.{namespace}.svc:{HTTP_PORT}"
