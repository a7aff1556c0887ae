"""Kubernetes-style status, decided as a pure function: phases, conditions and their events.

`StatusBuilder` starts from the current status and is told what the status should now say. A
condition keeps its `lastTransitionTime` unless its status changes; every change of phase, and
every change of status or (for warnings) reason of a condition, becomes an event. Each kind passes
in what differs: the status fields the operator owns, the order of its conditions, and which
phases are warnings. Nothing here knows a kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def condition(obj: Obj, kind: str) -> Obj | None:
    """The condition `kind` in an object's status (any Kubernetes object), if it has one."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def true(obj: Obj, kind: str) -> Obj | None:
    found = condition(obj, kind)
    return found if found and found.get("status") == "True" else None


@dataclass(frozen=True)
class StatusShape:
    """What one kind's status looks like to the builder."""

    owned_fields: Sequence[str]  # status fields the operator writes; everything else is left alone
    condition_order: Sequence[str]  # conditions are written in this order
    warning_phases: Sequence[str]  # entering one of these is a Warning event


class StatusBuilder:
    def __init__(self, shape: StatusShape, current: Obj, generation: int, now: datetime):
        self.shape = shape
        self.now = now
        self.generation = generation
        self.fields: Obj = {k: current[k] for k in shape.owned_fields if k in current}
        self.fields["observedGeneration"] = generation
        self._conditions = {c["type"]: dict(c) for c in current.get("conditions") or []}
        self.events: list[Event] = []

    @property
    def phase(self) -> str | None:
        return self.fields.get("phase")

    def set_phase(self, phase: str, message: str, *, announce: bool = True) -> None:
        """Set the phase; a new phase is also an event unless `announce` is False (the caller's
        own event says what happened)."""
        if self.phase != phase and announce:
            before = self.phase or "New"
            kind = "Warning" if phase in self.shape.warning_phases else "Normal"
            self.events.append(Event(kind, phase, f"{before} → {phase}: {message}"))
        self.fields["phase"] = phase

    def condition(self, kind: str) -> Obj | None:
        return self._conditions.get(kind)

    def set_condition(
        self, kind: str, status: str, reason: str, message: str, *, warn: bool = False, announce: bool = True
    ) -> None:
        """Set condition `kind`; news (see below) is also an event unless `announce` is False (the
        caller posts its own)."""
        old = self._conditions.get(kind)
        now = format_time(self.now)
        changed = old is None or old.get("status") != status
        # News: a status change (a first False/Unknown is not), or a new reason for a warning.
        news = (changed and (old is not None or status == "True")) or (
            warn and (changed or old.get("reason") != reason)
        )
        if news and announce:
            self.events.append(Event("Warning" if warn else "Normal", reason, f"{kind}={status}: {message}"))
        self._conditions[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
            "observedGeneration": self.generation,
        }

    def result(self) -> Obj:
        order = list(self.shape.condition_order)
        conditions = sorted(self._conditions.values(), key=lambda c: (order + [c["type"]]).index(c["type"]))
        return {**self.fields, "conditions": conditions}


def status_patch(decided: Obj, current: Obj) -> Obj:
    """Only the decided fields that differ from `current` (empty: nothing to write)."""
    return {k: v for k, v in decided.items() if current.get(k) != v}
