"""The children of a SoundMindServing, built from the spec alone (no cluster)."""

import pytest

from soundmind.api.serving import ServingSpec
from soundmind.serve import render
from soundmind_operator import pods
from soundmind_operator.serving import builders, names

NS = "team-a"
MODEL = builders.ModelSource("Qwen/Qwen2.5-Omni-7B")
KEDA = builders.Platform(keda=True, service_monitors=True, prometheus_url="http://prom.monitoring:9090")
BARE = builders.Platform()


def spec(**wire) -> ServingSpec:
    return ServingSpec.model_validate({"model": "Qwen/Qwen2.5-Omni-7B", **wire})


def kinds(children: list[dict]) -> list[str]:
    return [c["kind"] for c in children]


def container(deployment: dict) -> dict:
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return found


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_children_follow_the_platform_and_the_spec():
    assert kinds(builders.build_children("s", NS, spec(), MODEL, KEDA)) == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
    ]
    assert kinds(builders.build_children("s", NS, spec(), MODEL, BARE)) == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ]
    one = spec(autoscaling={"enabled": False}, replicas=1)
    assert kinds(builders.build_children("s", NS, one, MODEL, BARE)) == ["Service", "Deployment"]
    capped = spec(autoscaling={"minReplicas": 1, "maxReplicas": 1})
    assert "PodDisruptionBudget" not in kinds(builders.build_children("s", NS, capped, MODEL, KEDA))


def test_every_child_carries_the_standard_labels_with_the_server_component():
    for child in builders.build_children("s", NS, spec(), MODEL, KEDA):
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "s", child["kind"]
        assert labels["app.kubernetes.io/component"] == "server", child["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "soundmind-operator", child["kind"]


def test_vllm_command_carries_every_setting_and_extra_args_last():
    serving = spec(
        servedModelName="alr",
        vllm={"maxModelLen": 8192, "tensorParallelSize": 2, "gpuMemoryUtilization": 0.85, "extraArgs": ["--seed=3"]},
    )
    main = container(builders.build_deployment("s", serving, MODEL, KEDA))
    args = main["args"]
    assert main["command"] == ["vllm", "serve"] and args[0] == MODEL.path
    assert flag(args, "--served-model-name") == "alr"
    assert flag(args, "--port") == str(render.PORT) == "8000"
    assert flag(args, "--limit-mm-per-prompt") == '{"audio": 1}'
    assert flag(args, "--max-model-len") == "8192"
    assert flag(args, "--tensor-parallel-size") == "2"
    assert flag(args, "--gpu-memory-utilization") == "0.85"
    assert flag(args, "--dtype") == "bfloat16"
    assert args[-1] == "--seed=3"
    # GPUs per pod follow the tensor-parallel size.
    assert main["resources"]["requests"]["nvidia.com/gpu"] == "2" == main["resources"]["limits"]["nvidia.com/gpu"]


def test_startup_probe_allows_the_startup_timeout_before_liveness_counts():
    main = container(builders.build_deployment("s", spec(startupTimeoutSeconds=1200), MODEL, KEDA))
    startup = main["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200
    assert main["readinessProbe"]["httpGet"]["path"] == main["livenessProbe"]["httpGet"]["path"] == "/health"


def test_graceful_drain_and_no_replica_lost_in_a_rollout():
    deployment = builders.build_deployment("s", spec(drainSeconds=300), MODEL, KEDA)
    pod = deployment["spec"]["template"]["spec"]
    prestop = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] == prestop + 300
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["progressDeadlineSeconds"] > spec().startup_timeout_seconds


def test_pods_are_non_root_without_privileges_and_read_the_token_only_by_reference():
    serving = spec(hfTokenSecret={"name": "hf", "key": "token"})
    deployment = builders.build_deployment("s", serving, MODEL, KEDA)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == names.SERVER_UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(deployment)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    env = {e["name"]: e for e in main["env"]}
    assert env[pods.ENV_HF_TOKEN] == {
        "name": pods.ENV_HF_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }
    assert "value" not in env[pods.ENV_HF_TOKEN]


def test_shared_memory_in_ram_and_the_models_volume():
    pod = builders.build_deployment("s", spec(), MODEL, KEDA)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "models"
    assert "checkpoints" not in volumes


def test_a_trainings_export_is_served_from_its_checkpoint_volume_read_only():
    exported = builders.ModelSource("/checkpoints/alr/export/global_step_40", checkpoints_claim="ckpt")
    deployment = builders.build_deployment("s", spec(), exported, KEDA)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "ckpt", "readOnly": True}
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    assert mounts["checkpoints"]["readOnly"] and exported.path.startswith(mounts["checkpoints"]["mountPath"])
    assert container(deployment)["args"][0] == exported.path


def test_replicas_belong_to_the_autoscaler_when_it_is_on():
    assert "replicas" not in builders.build_deployment("s", spec(), MODEL, KEDA)["spec"]
    fixed = spec(autoscaling={"enabled": False}, replicas=3)
    assert builders.build_deployment("s", fixed, MODEL, KEDA)["spec"]["replicas"] == 3


def test_selectors_tell_a_serving_from_a_training_of_the_same_name():
    deployment = builders.build_deployment("alr", spec(), MODEL, KEDA)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/component"] == "server"
    assert builders.build_service("alr")["spec"]["selector"] == selector


def test_scaled_object_sums_the_metric_over_this_servings_pods_with_a_per_replica_threshold():
    serving = spec(
        autoscaling={
            "minReplicas": 2,
            "maxReplicas": 6,
            "metric": "num_requests_running",
            "target": 12,
            "scaleUpStabilizationSeconds": 30,
            "scaleDownStabilizationSeconds": 600,
        }
    )
    scaled = builders.build_scaled_object("alr", NS, serving, KEDA)["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "alr"}
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (2, 6)
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["serverAddress"] == KEDA.prometheus_url
    assert trigger["metadata"]["threshold"] == "12"
    assert trigger["metadata"]["query"] == (
        'sum(vllm:num_requests_running{namespace="team-a",app_kubernetes_io_instance="alr",'
        'app_kubernetes_io_component="server"})'
    )
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 30
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_scaling_query_uses_the_labels_the_service_monitor_scrapes():
    monitor = builders.build_service_monitor("alr")["spec"]
    query = builders.scaling_query("alr", NS, spec())
    for label in monitor["podTargetLabels"]:
        assert label.replace(".", "_").replace("/", "_") + '="' in query
    assert monitor["selector"]["matchLabels"] == builders.build_service("alr")["spec"]["selector"]
    assert monitor["endpoints"][0]["port"] == builders.build_service("alr")["spec"]["ports"][0]["name"]


@pytest.mark.parametrize(
    ("metric", "target", "name", "quantity"),
    [
        ("num_requests_waiting", 5, "vllm_num_requests_waiting", "5"),
        ("kv_cache_usage", 0.8, "vllm_kv_cache_usage_perc", "800m"),
    ],
)
def test_hpa_fallback_uses_the_same_signal_as_an_external_metric(metric, target, name, quantity):
    serving = spec(autoscaling={"metric": metric, "target": target, "maxReplicas": 4})
    hpa = builders.build_hpa("alr", NS, serving)["spec"]
    (external,) = hpa["metrics"]
    assert external["type"] == "External"
    assert external["external"]["metric"]["name"] == name
    assert external["external"]["metric"]["selector"]["matchLabels"]["app_kubernetes_io_instance"] == "alr"
    assert external["external"]["target"] == {"type": "AverageValue", "averageValue": quantity}
    assert hpa["maxReplicas"] == 4 and hpa["scaleTargetRef"]["name"] == "alr"


def test_without_service_monitors_pods_are_annotated_for_prometheus():
    annotated = builders.build_deployment("s", spec(), MODEL, BARE)["spec"]["template"]["metadata"]
    assert annotated["annotations"]["prometheus.io/port"] == "8000"
    plain = builders.build_deployment("s", spec(), MODEL, KEDA)["spec"]["template"]["metadata"]
    assert "annotations" not in plain


def test_longest_allowed_name_keeps_replica_set_names_within_a_dns_label():
    name = "s" * names.MAX_SERVING_NAME_LENGTH
    assert len(f"{names.deployment(name)}-{'x' * 10}") <= 63
