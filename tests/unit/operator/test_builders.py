"""The children of a SoundMindTraining, built from the spec alone (no cluster)."""

import pytest
import yaml

from soundmind.api.training import ResourcesSpec, TrainingSpec
from soundmind.train import contract
from soundmind.train.config import parse_spec
from soundmind_operator import pods
from soundmind_operator.training import builders, names

NS = "team-a"


def upper_bound(model, field: str) -> int:
    return next(m.le for m in model.model_fields[field].metadata if getattr(m, "le", None) is not None)


def spec(**wire) -> TrainingSpec:
    return TrainingSpec.model_validate(wire)


def pod_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def trainer(job: dict) -> dict:
    (container,) = pod_of(job)["containers"]
    return container


def env_of(job: dict) -> dict:
    return {e["name"]: e for e in trainer(job)["env"]}


def test_names_are_deterministic_and_derived_from_the_training():
    assert names.job("alr", 3) == "alr-a3"
    assert names.config_map("alr") == "alr-config"
    assert names.headless_service("alr") == "alr-ray"
    assert builders.build_job("alr", NS, spec(), 2) == builders.build_job("alr", NS, spec(), 2)


def test_longest_allowed_name_still_fits_every_derived_dns_label():
    name = "t" * names.MAX_TRAINING_NAME_LENGTH
    last_attempt = 1 + upper_bound(TrainingSpec, "max_retries")
    last_index = upper_bound(ResourcesSpec, "nodes") - 1
    assert len(f"{names.job(name, last_attempt)}-{last_index}") <= 63
    assert len(names.headless_service(name)) <= 63


@pytest.mark.parametrize(
    "build",
    [
        lambda s: builders.build_configmap("alr", s),
        lambda s: builders.build_service_account("alr"),
        lambda s: builders.build_role("alr"),
        lambda s: builders.build_role_binding("alr"),
        lambda s: builders.build_headless_service("alr"),
        lambda s: builders.build_job("alr", NS, s, 1),
    ],
)
def test_every_child_carries_the_standard_labels(build):
    labels = build(spec())["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "soundmind"
    assert labels["app.kubernetes.io/instance"] == "alr"
    assert labels["app.kubernetes.io/component"] == "trainer"
    assert labels["app.kubernetes.io/managed-by"] == "soundmind-operator"


def test_configmap_holds_the_spec_the_trainer_reads_back():
    original = spec(resources={"nodes": 2}, extraArgs=["trainer.val_before_train=False"])
    configmap = builders.build_configmap("alr", original)
    assert parse_spec(yaml.safe_load(configmap["data"][contract.CONFIG_FILE])) == original


def test_role_lets_the_trainer_patch_only_its_own_training_status():
    role = builders.build_role("alr")
    assert role["rules"] == contract.trainer_role_rules("alr")
    binding = builders.build_role_binding("alr")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": names.service_account("alr")}]


def test_single_node_job_shape():
    job = builders.build_job("alr", NS, spec(), 1)
    assert job["metadata"]["name"] == "alr-a1"
    assert job["metadata"]["labels"][names.ATTEMPT_LABEL] == "1"
    js = job["spec"]
    assert (js["completionMode"], js["completions"], js["parallelism"]) == ("Indexed", 1, 1)
    assert js["backoffLimit"] == 0 and js["suspend"] is False
    assert js["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    fail_job, ignore = js["podFailurePolicy"]["rules"]
    assert fail_job == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [contract.EXIT_CONFIG_ERROR]},
    }
    assert ignore["action"] == "Ignore" and ignore["onPodConditions"][0]["type"] == "DisruptionTarget"
    # The trainer's last words (a config or preflight error on stderr) become the termination message
    # the operator puts into status.
    assert trainer(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "activeDeadlineSeconds" not in js and "ttlSecondsAfterFinished" not in js
    pod = pod_of(job)
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == names.service_account("alr")
    assert "subdomain" not in pod and "affinity" not in pod
    assert env_of(job)[contract.ENV_HEAD_ADDRESS]["value"] == "127.0.0.1"


def test_pod_requests_gpus_cpu_memory_and_an_in_memory_shm():
    job = builders.build_job("alr", NS, spec(resources={"gpusPerNode": 4, "cpu": "32", "memory": "256Gi"}), 1)
    resources = trainer(job)["resources"]
    assert resources["requests"] == {"nvidia.com/gpu": "4", "cpu": "32", "memory": "256Gi"}
    assert resources["limits"]["nvidia.com/gpu"] == "4"
    volumes = {v["name"]: v for v in pod_of(job)["volumes"]}
    assert volumes["shm"] == {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}
    mounts = {m["name"]: m["mountPath"] for m in trainer(job)["volumeMounts"]}
    assert mounts == {
        "config": contract.CONFIG_DIR,
        "shm": contract.SHM_MOUNT,
        "checkpoints": contract.CHECKPOINTS_MOUNT,
        "data": contract.DATA_MOUNT,
        "models": contract.MODELS_MOUNT,
    }


def test_volumes_come_from_the_named_claims_and_the_configmap():
    storage = {"checkpoints": {"claimName": "ckpt"}, "data": {"claimName": "alr"}, "models": {"claimName": "hub"}}
    volumes = {v["name"]: v for v in pod_of(builders.build_job("alr", NS, spec(storage=storage), 1))["volumes"]}
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "ckpt"}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "alr"}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "hub"}
    assert volumes["config"]["configMap"] == {"name": "alr-config"}


def test_gpu_resource_name_is_the_specs():
    job = builders.build_job("alr", NS, spec(resources={"gpuResource": "amd.com/gpu"}), 1)
    assert trainer(job)["resources"]["limits"]["amd.com/gpu"] == "8"
    assert "nvidia.com/gpu" not in trainer(job)["resources"]["requests"]


def test_env_follows_the_pod_contract_and_the_token_only_through_a_secret_ref():
    job = builders.build_job("alr", NS, spec(hfTokenSecret={"name": "hf", "key": "tok"}), 3)
    env = env_of(job)
    assert env[contract.ENV_TRAINING_NAME]["value"] == "alr"
    assert env[contract.ENV_NAMESPACE]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env[contract.ENV_NODE_NAME]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}  # preflight
    assert env[contract.ENV_ATTEMPT]["value"] == "3"
    assert env[pods.ENV_HF_TOKEN] == {
        "name": pods.ENV_HF_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "tok"}},
    }
    assert pods.ENV_HF_TOKEN not in env_of(builders.build_job("alr", NS, spec(), 1))


def test_pods_run_unprivileged():
    job = builders.build_job("alr", NS, spec(), 1)
    assert pod_of(job)["securityContext"]["runAsNonRoot"] is True
    assert trainer(job)["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }


def test_multi_node_job_spreads_pods_and_addresses_the_head_through_the_headless_service():
    two = spec(resources={"nodes": 2})
    job = builders.build_job("alr", NS, two, 2)
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (2, 2)
    pod = pod_of(job)
    assert pod["subdomain"] == "alr-ray"
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["labelSelector"]["matchLabels"] == {names.JOB_NAME_LABEL: "alr-a2"}
    assert env_of(job)[contract.ENV_HEAD_ADDRESS]["value"] == f"alr-a2-0.alr-ray.{NS}.svc"
    service = builders.build_headless_service("alr")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["port"] == contract.RAY_HEAD_PORT
    kinds = [c["kind"] for c in builders.build_children("alr", two)]
    assert kinds == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Service"]
    assert "Service" not in [c["kind"] for c in builders.build_children("alr", spec())]


def test_placement_fields_pass_through():
    placed = spec(
        resources={
            "nodeSelector": {"pool": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "training-high",
        }
    )
    pod = pod_of(builders.build_job("alr", NS, placed, 1))
    assert pod["nodeSelector"] == {"pool": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training-high"


@pytest.mark.parametrize(
    "wire, suspended, queue_label",
    [
        ({}, False, None),
        ({"suspend": True}, True, None),
        ({"queueName": "gpu-queue"}, True, "gpu-queue"),
    ],
)
def test_suspend_and_kueue_queue(wire, suspended, queue_label):
    job = builders.build_job("alr", NS, spec(**wire), 1)
    assert job["spec"]["suspend"] is suspended
    assert job["metadata"]["labels"].get(names.KUEUE_QUEUE_LABEL) == queue_label


def test_deadline_and_ttl():
    job = builders.build_job("alr", NS, spec(ttlSecondsAfterFinished=600), 1, active_deadline_seconds=120)
    assert job["spec"]["activeDeadlineSeconds"] == 120
    assert job["spec"]["ttlSecondsAfterFinished"] == 600


@pytest.mark.parametrize(("nodes", "priority_class"), [(1, ""), (3, "training-high")])
def test_pod_group_gangs_the_attempts_pods(nodes, priority_class):
    wire = {"resources": {"nodes": nodes, "priorityClassName": priority_class}, "algorithm": {"trainBatchSize": 24}}
    group = builders.build_pod_group("alr", spec(**wire), 2)
    assert group["apiVersion"] == "scheduling.k8s.io/v1beta1" and group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == names.pod_group("alr", 2) == "alr-a2"
    assert group["metadata"]["labels"] == {**names.labels("alr"), names.ATTEMPT_LABEL: "2"}
    expected = {"schedulingPolicy": {"gang": {"minCount": nodes}}}
    if priority_class:
        expected["priorityClassName"] = priority_class
    assert group["spec"] == expected, "no workloadRef: it is optional, and the Job integration is alpha"

    job = builders.build_job("alr", NS, spec(**wire), 2, pod_group=True)
    assert pod_of(job)["schedulingGroup"] == {"podGroupName": "alr-a2"}
    assert "schedulingGroup" not in pod_of(builders.build_job("alr", NS, spec(**wire), 2))
