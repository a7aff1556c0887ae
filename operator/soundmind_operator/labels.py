"""The labels on every child the operator makes, and the selectors that find them again.

Every selector names the component as well as the instance: a SoundMindTraining and a
SoundMindServing with the same name in one namespace have children with the same instance label,
and only the component (`trainer`, `server`) keeps one kind's pods out of the other's selectors,
Services and wake-ups.
"""

from __future__ import annotations

OPERATOR_NAME = "soundmind-operator"
PART_OF = "soundmind"

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"

# What the operator's watches of children ask the API server for.
MANAGED = {MANAGED_BY_LABEL: OPERATOR_NAME}
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={OPERATOR_NAME}"


def labels(instance: str, component: str) -> dict[str, str]:
    """The standard labels of a child of the custom resource `instance`."""
    return {
        NAME_LABEL: "soundmind",
        INSTANCE_LABEL: instance,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: OPERATOR_NAME,
        PART_OF_LABEL: PART_OF,
    }


def match_labels(instance: str, component: str) -> dict[str, str]:
    """The labels that select exactly the children (pods) of one custom resource of one kind."""
    return {INSTANCE_LABEL: instance, COMPONENT_LABEL: component, MANAGED_BY_LABEL: OPERATOR_NAME}


def selector(instance: str, component: str) -> str:
    """`match_labels` as a label-selector string."""
    return ",".join(f"{key}={value}" for key, value in match_labels(instance, component).items())


def owner(labels_of_child: dict[str, str] | None) -> tuple[str, str] | None:
    """(component, instance) of a child from its labels; None for objects that are not ours."""
    found = labels_of_child or {}
    if found.get(MANAGED_BY_LABEL) != OPERATOR_NAME:
        return None
    component, instance = found.get(COMPONENT_LABEL), found.get(INSTANCE_LABEL)
    if not component or not instance:
        return None
    return component, instance
