"""What pods say about themselves, for both kinds: why the scheduler does not place them, and why
a container of a placed pod does not start. Pure functions of the pods as the watches show them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from soundmind_operator.conditions import condition

Obj = dict[str, Any]

# PodScheduled=False reasons of a pod the scheduler tried and could not place. `SchedulerError`:
# a plugin failed (its message is the plugin's, often opaque, see `references.opaque`).
UNPLACED_REASONS = ("Unschedulable", "SchedulerError")

# Waiting reasons a container does not recover from by waiting: each needs the user (a missing
# Secret or ConfigMap key, an image that cannot be pulled, a server that keeps crashing).
STUCK_REASONS = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
)


def _live(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp")


def unplaced(pods: Sequence[Obj]) -> list[Obj]:
    """Pods the scheduler tried and could not place."""
    return [
        p
        for p in pods
        if _live(p)
        and not (p.get("spec") or {}).get("nodeName")
        and (condition(p, "PodScheduled") or {}).get("reason") in UNPLACED_REASONS
    ]


def scheduler_messages(pods: Sequence[Obj]) -> list[str]:
    """The scheduler's messages on `pods`, each once, most frequent first, with how many pods
    carry it when more than one does."""
    said = Counter((condition(p, "PodScheduled") or {}).get("message") or "unschedulable" for p in pods)
    return [f"{message} ({count} pods)" if count > 1 else message for message, count in said.most_common()]


@dataclass(frozen=True)
class Stuck:
    pod: str
    container: str
    reason: str
    message: str
    restarts: int

    def describe(self) -> str:
        said = f": {self.message}" if self.message else ""
        again = f" after {self.restarts} restart(s)" if self.restarts else ""
        return f"pod {self.pod} {self.reason}{again}{said}"


def stuck(pods: Sequence[Obj]) -> Stuck | None:
    """The first container (init containers first) that waits for a reason of `STUCK_REASONS`."""
    for pod in pods:
        if not _live(pod):
            continue
        pod_status = pod.get("status") or {}
        for container in (pod_status.get("initContainerStatuses") or []) + (pod_status.get("containerStatuses") or []):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return Stuck(
                    pod["metadata"]["name"],
                    container.get("name", "?"),
                    waiting["reason"],
                    (waiting.get("message") or "").strip(),
                    container.get("restartCount", 0),
                )
    return None
