"""Deterministic names and labels of a training's children.

Every child's name is a function of the training's name (and the attempt, for the Job), so a
reconcile that runs twice, or an operator restarted half-way, finds what it created before instead
of creating it again.
"""

from __future__ import annotations

from soundmind.api.base import GROUP

OPERATOR_NAME = "soundmind-operator"
COMPONENT = "trainer"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
ATTEMPT_LABEL = f"{GROUP}/attempt"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on pods by the Job controller
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# Longest training name whose derived names still fit: the Job `<name>-a<attempt>` (attempt up to
# 101) and its pods' host names `<job>-<index>` (index up to 127) must be DNS labels (63).
MAX_TRAINING_NAME_LENGTH = 54
# Service names are DNS-1035 labels (start with a letter); the headless Service carries the name.
TRAINING_NAME_PATTERN = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def config_map(training: str) -> str:
    return f"{training}-config"


def service_account(training: str) -> str:
    return f"{training}-trainer"


def role(training: str) -> str:
    return f"{training}-trainer"


def role_binding(training: str) -> str:
    return f"{training}-trainer"


def headless_service(training: str) -> str:
    return f"{training}-ray"


def job(training: str, attempt: int) -> str:
    return f"{training}-a{attempt}"


def labels(training: str) -> dict[str, str]:
    """Standard labels of every child; also the selector for them (with managed-by, so another
    tool's objects that happen to share the instance name are never touched)."""
    return {
        NAME_LABEL: "soundmind",
        INSTANCE_LABEL: training,
        COMPONENT_LABEL: COMPONENT,
        MANAGED_BY_LABEL: OPERATOR_NAME,
        PART_OF_LABEL: "soundmind",
    }


def selector(training: str) -> str:
    return f"{MANAGED_BY_LABEL}={OPERATOR_NAME},{INSTANCE_LABEL}={training}"


def pod_selector(job_name: str) -> str:
    return f"{MANAGED_BY_LABEL}={OPERATOR_NAME},{JOB_NAME_LABEL}={job_name}"
