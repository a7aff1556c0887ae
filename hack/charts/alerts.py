"""SoundMind's alerts, as a Prometheus rule file (the PrometheusRule's spec), from the metric-name
modules. tests/promtool/ unit-tests each alert with `promtool test rules` (fires when it should,
silent when it should not); tests/integration/test_observability.py evaluates each expression
against a real Prometheus scraping the real operator, trainer exporter and vLLM metrics.

Every alert has a `summary`, a `description` naming the object, and a `runbook`: the first commands
to run. Annotations use `{{ $labels.x }}` and `{{ $value }}` only (no template functions), so the
promtool tests can state each expected text.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from soundmind.api import vllm_metrics as vllm
from soundmind.train import metrics as train
from soundmind_operator import metrics as op
from soundmind_operator.serving import names as serving_names

SERVER = f'app_kubernetes_io_component="{serving_names.COMPONENT}"'
BY_SERVING = "namespace, app_kubernetes_io_instance"

# Thresholds: long audio prompts (1.5k-3k tokens) make a first token slower than for chat.
TTFT_P99_SECONDS = 10
WAITING_PER_REPLICA = 20
KV_CACHE_FULL = 0.95
STALL_WINDOW = "30m"
PENDING_FOR = "30m"  # TrainingSpec.pendingTimeoutSeconds' default


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str
    runbook: str

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.duration,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description, "runbook": self.runbook},
        }


TRAINING_ALERTS = (
    Alert(
        "SoundMindTrainingStalled",
        # The value is the step it is stuck at.
        f"{train.STEP} < {train.TOTAL_STEPS} and changes({train.STEP}[{STALL_WINDOW}]) == 0"
        f" and on (namespace, training) {op.TRAINING_GPUS_RUNNING} > 0",
        "5m",
        "warning",
        "A training's GRPO step has not advanced",
        "SoundMindTraining {{ $labels.namespace }}/{{ $labels.training }} holds GPUs but has been at step "
        "{{ $value }} for " + STALL_WINDOW + ".",
        "kubectl -n {{ $labels.namespace }} describe smt {{ $labels.training }} (condition Stalled); "
        "kubectl -n {{ $labels.namespace }} logs job/$(kubectl -n {{ $labels.namespace }} get smt "
        "{{ $labels.training }} -o jsonpath='{.status.jobName}') --tail=200; a hung rollout or NCCL: "
        "delete the Job and the operator retries from the last checkpoint.",
    ),
    Alert(
        "SoundMindTrainingFailed",
        f'{op.TRAININGS}{{phase="Failed"}} > 0',
        "0m",
        "warning",
        "Trainings have failed",
        "{{ $value }} SoundMindTraining(s) are Failed (retries exhausted, a configuration error, or a deadline).",
        "kubectl get smt -A | grep Failed; kubectl describe smt <name>: the Failed condition's reason "
        "(BackoffLimitExceeded, ConfigError, DeadlineExceeded, PendingTimeout) and message say why.",
    ),
    Alert(
        "SoundMindTrainingPendingTooLong",
        f'{op.TRAININGS}{{phase="Pending"}} > 0',
        PENDING_FOR,
        "warning",
        "Trainings cannot be scheduled",
        "{{ $value }} SoundMindTraining(s) have been Pending for " + PENDING_FOR + ": their pods do not fit.",
        "kubectl describe smt <name>: condition Schedulable=False quotes the scheduler (GPUs, node selector, "
        "taints, unbound claims); kubectl get nodes -o custom-columns=NAME:.metadata.name,"
        "GPU:.status.allocatable.nvidia\\.com/gpu",
    ),
    Alert(
        "SoundMindTrainingRetrying",
        f"increase({op.TRAINING_RETRIES}[1h]) > 0",
        "0m",
        "info",
        "A training restarted its whole group",
        "SoundMindTraining {{ $labels.namespace }}/{{ $labels.training }} retried after a failed attempt; it "
        "resumes from its last checkpoint.",
        "kubectl -n {{ $labels.namespace }} get events --field-selector involvedObject.name={{ $labels.training }}; "
        "kubectl -n {{ $labels.namespace }} get smt {{ $labels.training }} -o jsonpath='{.status.attempt}'",
    ),
)

SERVING_ALERTS = (
    Alert(
        "SoundMindServingTTFTHigh",
        f"histogram_quantile(0.99, sum by ({BY_SERVING}, le) "
        f"(rate({vllm.TIME_TO_FIRST_TOKEN}_bucket{{{SERVER}}}[5m]))) > {TTFT_P99_SECONDS}",
        "10m",
        "warning",
        "Time to first token p99 is high",
        "Serving {{ $labels.namespace }}/{{ $labels.app_kubernetes_io_instance }}: p99 time to first token is "
        "{{ $value }}s (threshold " + f"{TTFT_P99_SECONDS}s" + ").",
        "kubectl -n {{ $labels.namespace }} describe sms {{ $labels.app_kubernetes_io_instance }} "
        "(ScalingActive, replicas vs maxReplicas); check the Serving dashboard's waiting requests and KV cache.",
    ),
    Alert(
        "SoundMindServingQueueHigh",
        f"sum by ({BY_SERVING}) ({vllm.NUM_REQUESTS_WAITING}{{{SERVER}}}) / "
        f"count by ({BY_SERVING}) ({vllm.NUM_REQUESTS_WAITING}{{{SERVER}}}) > {WAITING_PER_REPLICA}",
        "10m",
        "warning",
        "Requests are queueing",
        "Serving {{ $labels.namespace }}/{{ $labels.app_kubernetes_io_instance }} has {{ $value }} requests "
        "waiting per replica.",
        "kubectl -n {{ $labels.namespace }} get sms,hpa; if replicas are at maxReplicas, raise it or add GPUs; "
        "if the autoscaler is not acting, see ScalingActive in kubectl describe sms.",
    ),
    Alert(
        "SoundMindServingKVCacheNearFull",
        f"max by ({BY_SERVING}) ({vllm.KV_CACHE_USAGE}{{{SERVER}}}) > {KV_CACHE_FULL}",
        "10m",
        "warning",
        "KV cache nearly full",
        "Serving {{ $labels.namespace }}/{{ $labels.app_kubernetes_io_instance }}: a replica's KV cache is "
        "{{ $value }} full (1 = all of it); requests get preempted.",
        "Scale on kv_cache_usage (spec.autoscaling.metric), raise vllm.gpuMemoryUtilization or lower "
        "vllm.maxModelLen: kubectl -n {{ $labels.namespace }} edit sms {{ $labels.app_kubernetes_io_instance }}",
    ),
    Alert(
        "SoundMindServingNoReadyReplicas",
        f"{op.SERVING_REPLICAS_DESIRED} > 0 and {op.SERVING_REPLICAS_READY} == 0",
        "15m",
        "critical",
        "A serving has no ready replica",
        "SoundMindServing {{ $labels.namespace }}/{{ $labels.serving }} wants replicas but none is ready.",
        "kubectl -n {{ $labels.namespace }} describe sms {{ $labels.serving }} (Degraded reason: CrashLoopBackOff, "
        "ImagePullBackOff, pending GPUs); kubectl -n {{ $labels.namespace }} logs deploy/{{ $labels.serving }}",
    ),
    Alert(
        "SoundMindServingAtMaxReplicas",
        # Only a serving that can scale (min < max): with autoscaling off, or min == max, desired is
        # always its maximum and there is no autoscaler to run out of room.
        f"{op.SERVING_REPLICAS_DESIRED} >= {op.SERVING_REPLICAS_MAX}"
        f" and {op.SERVING_REPLICAS_MAX} > {op.SERVING_REPLICAS_MIN}",
        "30m",
        "info",
        "A serving has run at its most replicas for long",
        "SoundMindServing {{ $labels.namespace }}/{{ $labels.serving }} has wanted its maximum of {{ $value }} "
        "replicas for 30m: the autoscaler has no room left.",
        "Raise spec.autoscaling.maxReplicas (GPUs permitting): kubectl -n {{ $labels.namespace }} patch sms "
        '{{ $labels.serving }} --type merge -p \'{"spec":{"autoscaling":{"maxReplicas":N}}}\'',
    ),
)

OPERATOR_ALERTS = (
    Alert(
        "SoundMindOperatorReconcileErrors",
        f'sum by (kind) (rate({op.RECONCILE_TOTAL}{{result="{op.RESULT_ERROR}"}}[5m])) > 0',
        "10m",
        "warning",
        "The operator's reconcile passes fail",
        "{{ $labels.kind }} reconcile passes have failed for 10m ({{ $value }} per second).",
        "kubectl -n soundmind-system logs deploy/soundmind-operator | grep -i error: a missing RBAC rule "
        "(Forbidden), an unreachable API server, or a webhook refusing children.",
    ),
    Alert(
        "SoundMindOperatorDown",
        'absent(up{job="soundmind-operator"} == 1)',
        "5m",
        "critical",
        "The SoundMind operator is down",
        "No soundmind-operator target has answered a scrape for 5m: trainings and servings are not reconciled.",
        "kubectl -n soundmind-system get pods -l app.kubernetes.io/name=soundmind-operator; kubectl -n "
        "soundmind-system describe deploy soundmind-operator; its logs (--previous after a crash).",
    ),
)

GROUPS = {
    "soundmind-training": TRAINING_ALERTS,
    "soundmind-serving": SERVING_ALERTS,
    "soundmind-operator": OPERATOR_ALERTS,
}


def rule_file() -> dict:
    return {"groups": [{"name": name, "rules": [a.rule() for a in alerts]} for name, alerts in GROUPS.items()]}


def render() -> str:
    header = "# Generated by `python -m hack.charts --write` (hack/charts/alerts.py); do not edit.\n"
    return header + yaml.safe_dump(rule_file(), sort_keys=False, width=1000, allow_unicode=True)
