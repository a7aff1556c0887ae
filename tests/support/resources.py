"""Reading and waiting on SoundMind custom resources in tests, for either kind."""

from __future__ import annotations

import os
from collections.abc import Callable

import yaml

from soundmind.api.base import GROUP, VERSION, ResourceKind
from tests.support.kube import Kube
from tests.support.poll import wait_for


def get(kube: Kube, kind: ResourceKind, ns: str, name: str) -> dict:
    return kube.custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, kind.plural, name)


def condition(obj: dict, kind: str) -> dict:
    """The condition `kind` of a custom resource's status, or {}."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), {})


def wait(
    kube: Kube,
    kind: ResourceKind,
    ns: str,
    name: str,
    predicate: Callable[[dict], bool],
    what: str,
    timeout: float = 30,
) -> dict:
    """The object once `predicate` holds; on time-out the error shows its status."""

    def check():
        found = get(kube, kind, ns, name)
        return found if predicate(found) else None

    try:
        return wait_for(check, timeout=timeout, what=f"{kind.kind} {ns}/{name}: {what}")
    except AssertionError as error:
        status = yaml.safe_dump(get(kube, kind, ns, name).get("status") or {}, width=200)
        raise AssertionError(f"{error}\nstatus:\n{status}") from None


# A file to which `capture` appends what kubectl shows of an object (a report's before and after).
CAPTURE_ENV = "SOUNDMIND_KUBECTL_CAPTURE"


def capture(kube: Kube, kind: ResourceKind, ns: str, name: str, case: str) -> None:
    """Append `kubectl get -o wide` and `kubectl describe` of the object to $SOUNDMIND_KUBECTL_CAPTURE,
    when it is set, under the heading `case`."""
    path = os.environ.get(CAPTURE_ENV)
    if not path:
        return
    shown = [f"==== {case} ====\n"]
    for args in (("get", kind.plural, name, "-n", ns, "-o", "wide"), ("describe", kind.plural, name, "-n", ns)):
        result = kube.kubectl(*args, check=False)
        shown.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    with open(path, "a") as out:
        out.write("".join(shown))
