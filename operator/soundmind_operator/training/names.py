"""Deterministic names and labels of a training's children.

Every child's name is a function of the training's name (and the attempt, for the Job), so a
reconcile that runs twice, or an operator restarted half-way, finds what it created before instead
of creating it again.
"""

from __future__ import annotations

from soundmind.api.base import GROUP
from soundmind_operator import labels as standard

COMPONENT = "trainer"

ATTEMPT_LABEL = f"{GROUP}/attempt"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on pods by the Job controller
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

# Longest training name whose derived names still fit: the Job `<name>-a<attempt>` (attempt up to
# 101) and its pods' host names `<job>-<index>` (index up to 127) must be DNS labels (63).
MAX_TRAINING_NAME_LENGTH = 54


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


def pod_group(training: str, attempt: int) -> str:
    """The attempt's PodGroup: one per Job, named after it."""
    return job(training, attempt)


def labels(training: str) -> dict[str, str]:
    """Standard labels of every child."""
    return standard.labels(training, COMPONENT)


def match_labels(training: str) -> dict[str, str]:
    """What selects the training's pods (and nothing of a serving of the same name)."""
    return standard.match_labels(training, COMPONENT)


def selector(training: str) -> str:
    return standard.selector(training, COMPONENT)
