"""kwok Stage list implementing the lifecycle described in :mod:`tests.support.sim`.

A Stage list given to kwok replaces all of its defaults, so this list carries the node stages
(initialize, heartbeat with leases) and pod delete as well as our own pod stages. kwok picks at
random among stages whose selectors match, so the pod selectors here are mutually exclusive.
Placeholders such as ``@EXIT_CODE@`` are filled from :mod:`tests.support.sim`.
"""

from __future__ import annotations

from tests.support import sim

_NODE_STATUS = """\
      {{ $now := Now }}
      {{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $lastTransitionTime | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
"""

# A pod whose containers have ended. The including template sets $now, $code (the exit code, a
# string), $reason and $message first.
_TERMINATED = """\
      conditions:
      - {type: Ready, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", reason: PodCompleted, lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: false
        restartCount: 0
        state:
          terminated:
            exitCode: {{ $code }}
            reason: {{ $reason | Quote }}
            message: {{ $message | Quote }}
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
      {{ end }}
      phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}
"""

_STAGES = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
@NODE_STATUS@
      allocatable: {{ YAML .status.allocatable 1 }}
      capacity: {{ YAML .status.capacity 1 }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        bootID: ""
        machineID: ""
        osImage: ""
        systemUUID: ""
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat-with-lease
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ['True']
  delay:
    durationMilliseconds: 600000
    jitterDurationMilliseconds: 610000
  next:
    statusTemplate: |
@NODE_STATUS@
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: PodReadyToStartContainers, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      {{ range .spec.readinessGates }}
      - {type: {{ .conditionType | Quote }}, status: "True", lastTransitionTime: {{ $now | Quote }}}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        {{ if eq .restartPolicy "Always" }}
        started: true
        state: {running: {startedAt: {{ $now | Quote }}}}
        {{ else }}
        state:
          terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }}, finishedAt: {{ $now | Quote }}}
        {{ end }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      {{ $m := .metadata }}
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) $m.uid $m.name $m.namespace | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-job-complete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.metadata.ownerReferences.[].kind'
      operator: In
      values: ['Job']
    - key: '.metadata.annotations["@RUN_DURATION@"]'
      operator: Exists
    - key: '.metadata.annotations["@EXIT_CODE@"]'
      operator: DoesNotExist
  delay:
    durationFrom: {cel: {expression: '@TIME_LEFT@'}}
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := "0" }}{{ $reason := "Completed" }}{{ $message := "" }}
@TERMINATED@
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-exit
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Running']
    - key: '.metadata.annotations["@EXIT_CODE@"]'
      operator: Exists
  delay:
    durationFrom: {cel: {expression: '@TIME_LEFT@'}}
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := index .metadata.annotations "@EXIT_CODE@" }}
      {{ $defaultReason := "Error" }}
      {{ if eq $code "0" }}{{ $defaultReason = "Completed" }}{{ end }}
      {{ $reason := or ( index .metadata.annotations "@EXIT_REASON@" ) $defaultReason }}
      {{ $message := or ( index .metadata.annotations "@EXIT_MESSAGE@" ) "" }}
@TERMINATED@
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-terminate-on-delete
spec:
  # As a kubelet does: a deleted pod's containers are stopped (SIGTERM, exit 143) and the pod
  # reaches a terminal phase before it is removed. Controllers that hold a finalizer until then
  # (the Job controller does, for Jobs with a podFailurePolicy) can let go of it.
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
    - key: '.status.phase'
      operator: In
      values: ['Pending', 'Running']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := "143" }}{{ $reason := "Error" }}{{ $message := "stopped: the pod was deleted" }}
@TERMINATED@
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
    - key: '.status.phase'
      operator: In
      values: ['Succeeded', 'Failed']
  next:
    delete: true
"""


# How long a running pod has left of its run duration (none: zero). Counted from the pod's start, not
# from when kwok last saw it change, so patching a running pod does not restart its clock.
_TIME_LEFT = (
    '"@RUN_DURATION@" in self.metadata.annotations'
    ' ? duration(self.metadata.annotations["@RUN_DURATION@"]) - (Now() - self.status.startTime)'
    ' : duration("0s")'
)


def stages_yaml() -> str:
    """The kwok configuration file: a multi-document YAML of Stages."""
    text = (
        _STAGES.replace("@NODE_STATUS@\n", _NODE_STATUS)
        .replace("@TERMINATED@\n", _TERMINATED)
        .replace("@TIME_LEFT@", _TIME_LEFT)
    )
    for placeholder, value in {
        "@RUN_DURATION@": sim.RUN_DURATION,
        "@EXIT_CODE@": sim.EXIT_CODE,
        "@EXIT_REASON@": sim.EXIT_REASON,
        "@EXIT_MESSAGE@": sim.EXIT_MESSAGE,
    }.items():
        text = text.replace(placeholder, value)
    return text
