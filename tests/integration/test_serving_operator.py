"""SoundMindServing on the local control plane, with the operator running as its ServiceAccount.

The API server (schemas, CEL, the scale subresource), the scheduler, the Deployment, ReplicaSet,
HPA and garbage-collector controllers and RBAC are real; kwok plays the kubelets and marks the vLLM
pods Ready. The tests run in file order: first without KEDA and prometheus-operator (the HPA path
and pod annotations), then with their real CRDs installed from their Go modules and the operator
restarted (the KEDA path and ServiceMonitors), since the operator decides that once at start-up.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from hack.images.build import IMAGES
from soundmind.api.base import GROUP, VERSION
from soundmind.api.serving import SERVING
from soundmind.api.training import TRAINING
from soundmind_operator import children
from soundmind_operator.serving import names
from tests.support import operator as op
from tests.support import resources, sim
from tests.support.extended_resources import TEST_GPU, advertised
from tests.support.kube import Kube, exists, read_or_none
from tests.support.poll import wait_for
from tests.support.third_party_crds import crd_dir, crds

pytestmark = pytest.mark.integration

IMAGE = "registry.invalid/soundmind/server:sim"  # never pulled: kwok runs no containers
MODEL = "Qwen/Qwen2.5-Omni-7B"


# -- helpers ----------------------------------------------------------------------------------


def serving_manifest(name: str, **spec) -> dict:
    if "fromTraining" not in spec:
        spec.setdefault("model", MODEL)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": SERVING.kind,
        "metadata": {"name": name},
        "spec": {"image": IMAGE, "resources": {"cpu": "1", "memory": "1Gi"}, **spec},
    }


def create_serving(kube: Kube, ns: str, name: str, **spec) -> dict:
    return kube.custom_objects.create_namespaced_custom_object(
        GROUP, VERSION, ns, SERVING.plural, serving_manifest(name, **spec)
    )


def get_serving(kube: Kube, ns: str, name: str) -> dict:
    return resources.get(kube, SERVING, ns, name)


def patch_serving(kube: Kube, ns: str, name: str, spec: dict) -> None:
    kube.custom_objects.patch_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, name, {"spec": spec})


condition = resources.condition


def wait_serving(kube: Kube, ns: str, name: str, predicate, what: str, timeout: float = 30) -> dict:
    return resources.wait(kube, SERVING, ns, name, predicate, what, timeout)


def available(replicas: int):
    def check(serving: dict) -> bool:
        status = serving.get("status") or {}
        return status.get("phase") == "Available" and status.get("readyReplicas") == replicas

    return check


def deployment(kube: Kube, ns: str, name: str):
    return kube.apps_v1.read_namespaced_deployment(names.deployment(name), ns)


def args_of(dep) -> list[str]:
    return dep.spec.template.spec.containers[0].args


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def server_pods(kube: Kube, ns: str, name: str) -> list:
    pods = kube.core_v1.list_namespaced_pod(ns, label_selector=names.selector(name)).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


def events_of(kube: Kube, ns: str, name: str) -> list:
    selector = f"involvedObject.kind={SERVING.kind},involvedObject.name={name}"
    return kube.core_v1.list_namespaced_event(ns, field_selector=selector).items


def kubectl_apply(kube: Kube, tmp_path: Path, manifest: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / f"{manifest['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return kube.kubectl("apply", *args, "-f", str(path), check=False)


THIRD_PARTY = ("keda", "prometheus-operator")


@pytest.fixture(scope="module", autouse=True)
def without_keda_and_monitoring(kube: Kube) -> None:
    """The module starts on a cluster without KEDA's and prometheus-operator's CRDs (an earlier
    module may have installed them): autouse, so it runs before the operator starts."""
    names_ = [crd["metadata"]["name"] for project in THIRD_PARTY for crd in crds(project)]
    for name in names_:
        read_or_none(lambda name=name: kube.apiextensions_v1.delete_custom_resource_definition(name))
    wait_for(
        lambda: (
            not any(read_or_none(lambda n=n: kube.apiextensions_v1.read_custom_resource_definition(n)) for n in names_)
        ),
        timeout=60,
        what="KEDA's and prometheus-operator's CRDs removed",
    )


# -- admission ---------------------------------------------------------------------------------

BAD_SPECS = [
    ({"fromTraining": {"name": "alr"}, "model": MODEL}, "exactly one of spec.model and spec.fromTraining"),
    ({"model": None}, "exactly one of spec.model and spec.fromTraining"),
    ({"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
    ({"autoscaling": {"metric": "gpu_utilization"}}, "spec.autoscaling.metric"),
    ({"autoscaling": {"metric": "kv_cache_usage", "target": 5}}, "spec.autoscaling.target"),
    ({"vllm": {"gpuMemoryUtilization": 1.5}}, "spec.vllm.gpuMemoryUtilization"),
    ({"vllm": {"tensorParallelSize": 2}, "resources": {"gpus": 1}}, "spec.resources.gpus"),
    ({"vllm": {"dtype": "fp4"}}, "spec.vllm.dtype"),
    ({"servedModelName": "my model!"}, "spec.servedModelName"),
    ({"replicas": -1}, "spec.replicas"),
    ({"hfTokenSecret": {"key": "token"}}, "spec.hfTokenSecret.name"),
    ({"startupTimeoutSeconds": 5}, "spec.startupTimeoutSeconds"),
    ({"vllm": {"maxModelLen": "32k"}}, "spec.vllm.maxModelLen"),
]


def test_bad_servings_are_rejected_at_admission_naming_the_field(kube: Kube, namespace: str, tmp_path: Path):
    op.install_crds(kube)
    wrong = {}
    for index, (spec, said) in enumerate(BAD_SPECS):
        manifest = serving_manifest(f"bad-{index}", **spec)
        manifest["spec"] = {k: v for k, v in manifest["spec"].items() if v is not None}
        manifest["metadata"]["namespace"] = namespace
        result = kubectl_apply(kube, tmp_path, manifest)
        if result.returncode == 0 or said not in result.stderr:
            wrong[f"{spec}"] = result.stderr or "accepted"
    long_name = "s" * (names.MAX_SERVING_NAME_LENGTH + 1)
    for name in (long_name, "7up"):
        manifest = {**serving_manifest(name), "metadata": {"name": name, "namespace": namespace}}
        result = kubectl_apply(kube, tmp_path, manifest)
        if result.returncode == 0 or "metadata.name" not in result.stderr:
            wrong[name] = result.stderr or "accepted"
    assert not wrong, "accepted, or refused without naming the field:\n" + "\n".join(
        f"{k}: {v}" for k, v in wrong.items()
    )
    example = op.ROOT / "examples" / "serving.yaml"
    dry_run = kube.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False)
    assert dry_run.returncode == 0, dry_run.stderr


# -- without KEDA: an HPA, and pods annotated for Prometheus -----------------------------------


def test_serving_becomes_available_with_its_children(kube: Kube, ns: str, operator: op.OperatorProcess):
    create_serving(kube, ns, "omni", vllm={"maxModelLen": 16384}, autoscaling={"minReplicas": 2, "maxReplicas": 4})
    served = wait_serving(kube, ns, "omni", available(2), "Available with 2 ready replicas", timeout=60)
    status = served["status"]
    assert status["url"] == f"http://omni.{ns}.svc:8000" and status["model"] == MODEL
    assert status["replicas"] == 2 and status["autoscaler"] == "HPA"
    assert condition(served, "Available")["status"] == "True"
    assert condition(served, "ModelReady")["status"] == "True"
    assert condition(served, "ConfigError")["status"] == "False"
    assert condition(served, "ScalingActive")["reason"] in ("HPA", "FailedGetExternalMetric")

    dep = deployment(kube, ns, "omni")
    args = args_of(dep)
    assert dep.spec.template.spec.containers[0].command == ["vllm", "serve"] and args[0] == MODEL
    assert flag(args, "--served-model-name") == "soundmind" and flag(args, "--max-model-len") == "16384"
    assert flag(args, "--limit-mm-per-prompt") == '{"audio": 1}'
    assert dep.spec.strategy.rolling_update.max_unavailable == 0
    container = dep.spec.template.spec.containers[0]
    assert container.startup_probe.http_get.path == "/health" and container.security_context.capabilities.drop == [
        "ALL"
    ]
    assert dep.spec.template.metadata.annotations["prometheus.io/scrape"] == "true"
    for pod in server_pods(kube, ns, "omni"):
        assert pod.spec.containers[0].resources.limits[sim.GPU_RESOURCE] == "1"

    service = kube.core_v1.read_namespaced_service(names.service("omni"), ns)
    assert service.spec.ports[0].name == "http" and service.spec.ports[0].port == 8000
    pdb = client.PolicyV1Api(kube.api_client).read_namespaced_pod_disruption_budget(names.disruption_budget("omni"), ns)
    assert pdb.spec.max_unavailable == 1
    hpa = client.AutoscalingV2Api(kube.api_client).read_namespaced_horizontal_pod_autoscaler("omni", ns)
    (metric,) = hpa.spec.metrics
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    assert metric.external.metric.name == "vllm_num_requests_waiting"
    assert metric.external.metric.selector.match_labels["app_kubernetes_io_instance"] == "omni"
    for child in (dep, service, pdb, hpa):
        assert child.metadata.owner_references[0].name == "omni"

    table = kube.kubectl("get", "sms", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "MODEL", "READY", "REPLICAS", "URL", "AGE"]
    assert table[1].split()[:6] == ["omni", "Available", MODEL, "2", "2", f"http://omni.{ns}.svc:8000"]
    wait_for(
        lambda: {"Progressing", "Available"} <= {e.reason for e in events_of(kube, ns, "omni")},
        what="events for the rollout",
    )
    exported = operator.metrics()
    assert f'soundmind_serving_replicas_ready{{namespace="{ns}",serving="omni"}} 2.0' in exported
    assert 'soundmind_servings{phase="Available"}' in exported


def test_scale_subresource_drives_replicas_when_autoscaling_is_off(kube: Kube, ns: str):
    create_serving(kube, ns, "fixed", autoscaling={"enabled": False}, replicas=1)
    served = wait_serving(kube, ns, "fixed", available(1), "Available with 1 replica", timeout=60)
    assert condition(served, "ScalingActive")["reason"] == "AutoscalingDisabled"
    assert not read_or_none(
        lambda: client.PolicyV1Api(kube.api_client).read_namespaced_pod_disruption_budget("fixed", ns)
    )

    kube.kubectl("scale", "sms", "fixed", "-n", ns, "--replicas", "3")
    wait_serving(kube, ns, "fixed", available(3), "Available with 3 replicas", timeout=60)
    assert deployment(kube, ns, "fixed").spec.replicas == 3
    shown = yaml.safe_load(kube.kubectl("get", "sms", "fixed", "-n", ns, "-o", "yaml").stdout)
    assert shown["status"]["replicas"] == 3 and shown["status"]["selector"] == names.selector("fixed")
    # What an HPA or `kubectl scale` reads: the scale subresource.
    scale = kube.custom_objects.get_namespaced_custom_object_scale(GROUP, VERSION, ns, SERVING.plural, "fixed")
    assert scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == names.selector("fixed")
    wait_for(
        lambda: exists(lambda: client.PolicyV1Api(kube.api_client).read_namespaced_pod_disruption_budget("fixed", ns)),
        what="a PDB once more than one replica may run",
    )
    wait_for(lambda: any(e.reason == "Scaled" for e in events_of(kube, ns, "fixed")), what="a Scaled event")


def test_spec_change_rolls_deleted_child_returns_and_deletion_cleans_up(kube: Kube, ns: str):
    create_serving(kube, ns, "roll", autoscaling={"enabled": False})
    wait_serving(kube, ns, "roll", available(1), "Available", timeout=60)
    before = deployment(kube, ns, "roll")

    patch_serving(kube, ns, "roll", {"vllm": {"maxModelLen": 8192}})
    wait_for(
        lambda: flag(args_of(deployment(kube, ns, "roll")), "--max-model-len") == "8192",
        what="the new maxModelLen in the Deployment",
    )
    rolled = deployment(kube, ns, "roll")
    assert rolled.metadata.generation > before.metadata.generation
    wait_serving(
        kube,
        ns,
        "roll",
        lambda s: available(1)(s) and s["status"]["observedGeneration"] == s["metadata"]["generation"],
        "Available after the rollout",
        timeout=60,
    )
    (pod,) = server_pods(kube, ns, "roll")
    assert flag(pod.spec.containers[0].args, "--max-model-len") == "8192", "the new pod runs the new command"

    kube.core_v1.delete_namespaced_service(names.service("roll"), ns)
    wait_for(
        lambda: exists(lambda: kube.core_v1.read_namespaced_service(names.service("roll"), ns)),
        timeout=10,
        what="the deleted Service restored",
    )

    kube.custom_objects.delete_namespaced_custom_object(GROUP, VERSION, ns, SERVING.plural, "roll")
    wait_for(
        lambda: (
            not read_or_none(lambda: deployment(kube, ns, "roll"))
            and not read_or_none(lambda: kube.core_v1.read_namespaced_service("roll", ns))
            and not server_pods(kube, ns, "roll")
        ),
        timeout=60,
        what="the serving's children garbage-collected",
    )


def replica_sets(kube: Kube, ns: str, name: str) -> list[str]:
    return sorted(
        r.metadata.name for r in kube.apps_v1.list_namespaced_replica_set(ns, label_selector=names.selector(name)).items
    )


def grace_seconds(kube: Kube, ns: str, name: str) -> int:
    return deployment(kube, ns, name).spec.template.spec.termination_grace_period_seconds


def rolled_out(kube: Kube, ns: str, name: str, replicas: int) -> bool:
    dep = deployment(kube, ns, name)
    state = dep.status
    return (
        state.observed_generation == dep.metadata.generation
        and (state.updated_replicas, state.ready_replicas, state.replicas) == (replicas,) * 3
    )


def test_a_pod_template_from_an_earlier_operator_is_kept_until_the_serving_rolls(kube: Kube, ns: str):
    """What an operator upgrade finds: a Deployment whose replicas run a template the operator would
    not build (here another grace period), stamped as an earlier operator's. The operator applies the
    rest in place, keeps the replicas' template and says so; the rollout annotation rolls them onto
    its own."""
    create_serving(kube, ns, "kept", autoscaling={"enabled": False}, replicas=2)
    wait_serving(kube, ns, "kept", available(2), "Available with 2 replicas", timeout=60)
    ours = grace_seconds(kube, ns, "kept")
    earlier = {children.POD_TEMPLATE_ANNOTATION: "earlier-operator", children.HASH_ANNOTATION: "earlier-operator"}
    earlier_template = {"spec": {"terminationGracePeriodSeconds": ours + 1}}
    body = {"metadata": {"annotations": earlier}, "spec": {"template": earlier_template}}
    kube.apps_v1.patch_namespaced_deployment(names.deployment("kept"), ns, body)
    wait_for(lambda: rolled_out(kube, ns, "kept", 2), timeout=60, what="the earlier operator's template rolled out")

    held = wait_serving(
        kube,
        ns,
        "kept",
        lambda s: (condition(s, "PodTemplateCurrent") or {}).get("reason") == "OperatorChangeHeld",
        "PodTemplateCurrent=False, OperatorChangeHeld",
    )
    assert (
        f"kubectl annotate sms kept {children.ROLLOUT_ANNOTATION}=" in condition(held, "PodTemplateCurrent")["message"]
    )
    wait_for(lambda: any(e.reason == "OperatorChangeHeld" for e in events_of(kube, ns, "kept")), what="an event")
    wait_for(
        lambda: deployment(kube, ns, "kept").metadata.annotations[children.HASH_ANNOTATION] != "earlier-operator",
        what="the rest of the Deployment applied",
    )
    sets, pods = replica_sets(kube, ns, "kept"), sorted(p.metadata.uid for p in server_pods(kube, ns, "kept"))
    time.sleep(3)  # a roll would have made a ReplicaSet and replaced pods by now
    assert deployment(kube, ns, "kept").metadata.annotations[children.POD_TEMPLATE_ANNOTATION] == "earlier-operator"
    assert grace_seconds(kube, ns, "kept") == ours + 1, "the replicas' template was replaced"
    assert replica_sets(kube, ns, "kept") == sets, "the held template rolled the replicas"
    assert sorted(p.metadata.uid for p in server_pods(kube, ns, "kept")) == pods

    kube.kubectl("annotate", "sms", "kept", "-n", ns, f"{children.ROLLOUT_ANNOTATION}=1765130000")
    wait_for(lambda: grace_seconds(kube, ns, "kept") == ours, what="the operator's own template applied")
    wait_serving(
        kube,
        ns,
        "kept",
        lambda s: (condition(s, "PodTemplateCurrent") or {}).get("status") == "True" and available(2)(s),
        "rolled onto the operator's template, Available again",
        timeout=90,
    )
    # (the Deployment controller scales the first ReplicaSet up again: its template is the operator's)
    wait_for(
        lambda: not set(pods) & {p.metadata.uid for p in server_pods(kube, ns, "kept")},
        timeout=60,
        what="every replica replaced",
    )


def test_a_bad_vllm_flag_is_a_config_error_and_no_pod_is_created(kube: Kube, ns: str):
    create_serving(kube, ns, "typo", vllm={"extraArgs": ["--enable-prefix-caching", "--max-num-seqs=abc"]})
    failed = wait_serving(
        kube, ns, "typo", lambda s: condition(s, "ConfigError").get("status") == "True", "ConfigError"
    )
    message = condition(failed, "ConfigError")["message"]
    assert "vllm.extraArgs[1]" in message and "--max-num-seqs" in message, message
    assert failed["status"]["phase"] == "Failed"
    assert not read_or_none(lambda: deployment(kube, ns, "typo")) and not server_pods(kube, ns, "typo")

    # Fixing the flag serves.
    patch_serving(kube, ns, "typo", {"vllm": {"extraArgs": ["--enable-prefix-caching", "--max-num-seqs=64"]}})
    wait_serving(kube, ns, "typo", available(1), "Available once fixed", timeout=60)
    assert args_of(deployment(kube, ns, "typo"))[-2:] == ["--enable-prefix-caching", "--max-num-seqs=64"]


def _training(kube: Kube, ns: str, name: str, **spec) -> None:
    kube.custom_objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        TRAINING.plural,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": TRAINING.kind,
            "metadata": {"name": name},
            "spec": {"image": IMAGE, **spec},
        },
    )


def _training_phase(kube: Kube, ns: str, name: str, phase: str) -> None:
    wait_for(
        lambda: (
            (
                kube.custom_objects.get_namespaced_custom_object(GROUP, VERSION, ns, TRAINING.plural, name).get(
                    "status"
                )
                or {}
            ).get("phase")
            == phase
        ),
        timeout=30,
        what=f"training {name} {phase}",
    )


def _end_driver(kube: Kube, ns: str, job: str, exit_code: int) -> None:
    def driver():
        pods = kube.core_v1.list_namespaced_pod(ns, label_selector=f"batch.kubernetes.io/job-name={job}").items
        return [p for p in pods if p.status.phase == "Running"]

    (pod,) = wait_for(driver, what=f"the running pod of {job}")
    kube.core_v1.patch_namespaced_pod(
        pod.metadata.name, ns, {"metadata": {"annotations": {sim.EXIT_CODE: str(exit_code)}}}
    )


def model_ready(reason: str):
    return lambda s: condition(s, "ModelReady").get("reason") == reason


def test_from_training_serves_only_an_exported_model(kube: Kube, ns: str):
    create_serving(kube, ns, "missing", fromTraining={"name": "nowhere"})
    create_serving(kube, ns, "waits", fromTraining={"name": "alr"})
    create_serving(kube, ns, "doomed", fromTraining={"name": "broken"})
    wait_serving(kube, ns, "missing", model_ready("TrainingNotFound"), "TrainingNotFound")

    _training(kube, ns, "alr", storage={"checkpoints": {"claimName": "soundmind-checkpoints"}})
    _training(kube, ns, "broken", maxRetries=0)
    _training_phase(kube, ns, "alr", "Running")
    waiting = wait_serving(kube, ns, "waits", model_ready("TrainingNotFinished"), "TrainingNotFinished")
    assert waiting["status"]["phase"] == "Pending" and not read_or_none(lambda: deployment(kube, ns, "waits"))

    _training_phase(kube, ns, "broken", "Running")
    _end_driver(kube, ns, "broken-a1", 1)
    doomed = wait_serving(kube, ns, "doomed", model_ready("TrainingFailed"), "TrainingFailed")
    assert doomed["status"]["phase"] == "Failed" and not read_or_none(lambda: deployment(kube, ns, "doomed"))

    # The trainer exports on success: index 0 records the merged model, then exits 0.
    export = "/checkpoints/alr/export/global_step_40"
    kube.custom_objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, TRAINING.plural, "alr", {"status": {"model": {"path": export, "step": 40}}}
    )
    _end_driver(kube, ns, "alr-a1", 0)
    served = wait_serving(kube, ns, "waits", available(1), "Available from the export", timeout=60)
    assert served["status"]["model"] == export
    assert condition(served, "ModelReady")["reason"] == "TrainingExported"
    dep = deployment(kube, ns, "waits")
    assert args_of(dep)[0] == export
    volumes = {v.name: v for v in dep.spec.template.spec.volumes}
    assert volumes["checkpoints"].persistent_volume_claim.claim_name == "soundmind-checkpoints"
    assert volumes["checkpoints"].persistent_volume_claim.read_only


def test_a_training_and_a_serving_of_the_same_name_keep_apart(kube: Kube, ns: str):
    _training(kube, ns, "twin", resources={"gpusPerNode": 4})  # fits beside the servers on one node
    create_serving(kube, ns, "twin", autoscaling={"enabled": False}, replicas=2)
    wait_serving(kube, ns, "twin", available(2), "Available", timeout=60)
    _training_phase(kube, ns, "twin", "Running")
    # Each kind's selector finds only its own pods: 2 servers, 1 trainer.
    assert len(server_pods(kube, ns, "twin")) == 2
    trainer = kube.core_v1.list_namespaced_pod(ns, label_selector="app.kubernetes.io/component=trainer").items
    assert len(trainer) == 1
    servers = {p.metadata.name for p in server_pods(kube, ns, "twin")}

    def service_targets() -> set[str]:
        slices = client.DiscoveryV1Api(kube.api_client).list_namespaced_endpoint_slice(
            ns, label_selector=f"kubernetes.io/service-name={names.service('twin')}"
        )
        return {e.target_ref.name for s in slices.items for e in s.endpoints or []}

    wait_for(lambda: service_targets() == servers, what="the Service's endpoints: the two servers, no trainer")
    # The training's pod ending moves the training, and leaves the serving as it was.
    _end_driver(kube, ns, "twin-a1", 0)
    _training_phase(kube, ns, "twin", "Succeeded")
    serving = get_serving(kube, ns, "twin")
    assert available(2)(serving) and serving["status"]["replicas"] == 2


# -- what blocks the replicas, in the status (issue 21) -------------------------------------------


def warnings_of(kube: Kube, ns: str, name: str) -> set[tuple[str, str]]:
    return {(e.reason, e.message) for e in events_of(kube, ns, name) if e.type == "Warning"}


def warned(kube: Kube, ns: str, name: str, told: Callable[[set[tuple[str, str]]], bool], what: str) -> None:
    """Wait until the serving's warning events (reason, message) satisfy `told`: the operator posts a
    pass's events after the status it writes, so a test that has just seen the status may be early."""
    said: set[tuple[str, str]] = set()

    def check() -> bool:
        said.clear()
        said.update(warnings_of(kube, ns, name))
        return told(said)

    try:
        wait_for(check, what=f"{what} among the warning events of {ns}/{name}")
    except AssertionError as error:
        raise AssertionError(f"{error}; they were: {sorted(said)}") from None


def blocked(kube: Kube, ns: str, name: str, reason: str, case: str, timeout: float = 30) -> dict:
    """The serving once both Schedulable and ResolvedRefs are False with `reason`; kubectl's view
    of it captured either way (`resources.capture`)."""
    try:
        return wait_serving(
            kube,
            ns,
            name,
            lambda s: (
                condition(s, "Schedulable").get("reason") == reason
                and condition(s, "ResolvedRefs").get("reason") == reason
            ),
            f"Schedulable and ResolvedRefs False with {reason}",
            timeout,
        )
    finally:
        resources.capture(kube, SERVING, ns, name, case)


def test_a_serving_whose_claim_does_not_exist_is_pending_and_names_it(kube: Kube, ns: str):
    create_serving(kube, ns, "noclaim", autoscaling={"enabled": False}, storage={"models": {"claimName": "no-models"}})
    serving = blocked(kube, ns, "noclaim", "ClaimNotFound", "serving with a missing models PersistentVolumeClaim")
    assert serving["status"]["phase"] == "Pending"
    resolved = condition(serving, "ResolvedRefs")
    assert resolved["status"] == "False"
    assert resolved["message"] == f'spec.storage.models.claimName: PersistentVolumeClaim "no-models" not found in {ns}'
    schedulable = condition(serving, "Schedulable")
    assert schedulable["status"] == "False"
    assert schedulable["message"].startswith("1/1 replicas cannot be placed: "), schedulable
    assert 'persistentvolumeclaim "no-models" not found' in schedulable["message"], schedulable
    both = {
        ("ClaimNotFound", f"ResolvedRefs=False: {resolved['message']}"),
        ("ClaimNotFound", f"Schedulable=False: {schedulable['message']}"),
    }
    warned(kube, ns, "noclaim", lambda said: both <= said, "ResolvedRefs=False and Schedulable=False")

    # The claim appears: its watch event wakes the serving, which then serves.
    op.create_volumes(kube, ns, ("no-models",))
    wait_serving(kube, ns, "noclaim", available(1), "Available once the claim is bound", timeout=60)
    assert condition(get_serving(kube, ns, "noclaim"), "ResolvedRefs")["status"] == "True"


def test_a_gpu_resource_no_node_offers_is_named(kube: Kube, ns: str):
    create_serving(
        kube,
        ns,
        "amd",
        autoscaling={"enabled": False},
        resources={"cpu": "1", "memory": "1Gi", "gpuResource": "amd.com/gpu"},
    )
    serving = blocked(kube, ns, "amd", "NoMatchingNode", "serving whose gpuResource no node offers")
    assert serving["status"]["phase"] == "Pending"
    assert condition(serving, "ResolvedRefs")["message"] == "spec.resources.gpuResource: no node offers amd.com/gpu"
    schedulable = condition(serving, "Schedulable")["message"]
    assert schedulable.startswith("1/1 replicas cannot be placed: ") and "Insufficient amd.com/gpu" in schedulable


@pytest.fixture
def real_node_gpu(kube: Kube, image_node: str) -> Iterator[str]:
    """A node that runs containers for real (the real node, or kind's) advertising one GPU of the
    tests' own resource, as a device plugin would; removed afterwards."""
    with advertised(kube, image_node, 1):
        yield image_node


def test_a_missing_token_secret_on_a_real_node_is_create_container_config_error(
    kube: Kube, ns: str, real_node_gpu: str
):
    """The kubelet refuses to make the container: the Secret the pod's env names is missing. The
    operator cannot read Secrets; the pod's reason and message reach the status."""
    create_serving(
        kube,
        ns,
        "notoken",
        image=IMAGES["standin"].tag,  # on the node: the kubelet gets past the pull to the container's config
        autoscaling={"enabled": False},
        hfTokenSecret={"name": "no-hf-token", "key": "token"},
        resources={
            "cpu": "100m",
            "memory": "64Mi",
            "gpuResource": TEST_GPU,
            "nodeSelector": {"kubernetes.io/hostname": real_node_gpu},
        },
    )
    try:
        serving = wait_serving(
            kube,
            ns,
            "notoken",
            lambda s: condition(s, "Progressing").get("reason") == "CreateContainerConfigError",
            "Progressing=False CreateContainerConfigError",
            timeout=90,
        )
    finally:
        resources.capture(kube, SERVING, ns, "notoken", "serving on the real node with a missing token Secret")
    (pod,) = server_pods(kube, ns, "notoken")
    assert pod.spec.node_name == real_node_gpu
    progressing = condition(serving, "Progressing")
    assert progressing["status"] == "False"
    assert (
        progressing["message"] == f'pod {pod.metadata.name} CreateContainerConfigError: secret "no-hf-token" not found'
    )
    assert serving["status"]["phase"] == "Degraded"
    warned(kube, ns, "notoken", lambda said: any(r == "Degraded" and "no-hf-token" in m for r, m in said), "Degraded")


def test_the_operator_cannot_read_secrets(kube: Kube, operator: op.OperatorProcess):
    user = f"system:serviceaccount:{op.OPERATOR_NAMESPACE}:{op.OPERATOR_SERVICE_ACCOUNT}"
    for verb, resource in [("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("create", "pods")]:
        said = kube.kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={user}", check=False)
        assert said.stdout.strip() == "no", f"{user} may {verb} {resource}"
    said = kube.kubectl("auth", "can-i", "patch", "deployments.apps", "-n", "default", f"--as={user}", check=False)
    assert said.stdout.strip() == "yes"
    # What specs refer to is watched, read-only (the reference check).
    for verb, resource, allowed in [
        ("watch", "persistentvolumeclaims", "yes"),
        ("watch", "nodes", "yes"),
        ("get", "nodes", "no"),
        ("patch", "nodes", "no"),
        ("patch", "persistentvolumeclaims", "no"),
    ]:
        said = kube.kubectl("auth", "can-i", verb, resource, "--all-namespaces", f"--as={user}", check=False)
        assert said.stdout.strip() == allowed, f"{user} may {verb} {resource}: {said.stdout.strip()}"


# -- with KEDA and prometheus-operator ---------------------------------------------------------


@pytest.fixture(scope="module")
def keda_and_monitoring(kube: Kube, operator: op.OperatorProcess) -> None:
    """KEDA's and prometheus-operator's real CRDs, then the operator restarted to find them."""
    installed = op.install_crds(kube, crd_dir("keda")) + op.install_crds(kube, crd_dir("prometheus-operator"))
    assert {"scaledobjects.keda.sh", "servicemonitors.monitoring.coreos.com"} <= set(installed)
    operator.stop()
    operator.start()


def test_with_keda_a_scaled_object_sums_vllm_load_over_the_servings_pods(
    kube: Kube, ns: str, keda_and_monitoring: None
):
    create_serving(
        kube,
        ns,
        "scaled",
        autoscaling={"minReplicas": 1, "maxReplicas": 5, "metric": "kv_cache_usage", "target": 0.75},
    )
    served = wait_serving(kube, ns, "scaled", available(1), "Available", timeout=60)
    assert served["status"]["autoscaler"] == "KEDA"
    active = condition(served, "ScalingActive")
    assert active["status"] == "True" and active["reason"] == "KEDA"
    scaled = kube.custom_objects.get_namespaced_custom_object("keda.sh", "v1alpha1", ns, "scaledobjects", "scaled")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "scaled"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["threshold"] == "0.75" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["query"].startswith("sum(vllm:kv_cache_usage_perc{")
    assert f'namespace="{ns}"' in trigger["metadata"]["query"]
    monitor = kube.custom_objects.get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", ns, "servicemonitors", "scaled"
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert not (deployment(kube, ns, "scaled").spec.template.metadata.annotations or {}).get("prometheus.io/scrape")
    assert not read_or_none(
        lambda: client.AutoscalingV2Api(kube.api_client).read_namespaced_horizontal_pod_autoscaler("scaled", ns)
    )
    wait_for(lambda: any(e.reason == "KEDA" for e in events_of(kube, ns, "scaled")), what="a ScalingActive event")

    # Autoscaling off: the ScaledObject goes, spec.replicas decides.
    patch_serving(kube, ns, "scaled", {"autoscaling": {"enabled": False}, "replicas": 2})
    wait_serving(kube, ns, "scaled", available(2), "Available with 2 fixed replicas", timeout=60)
    wait_for(
        lambda: (
            not read_or_none(
                lambda: kube.custom_objects.get_namespaced_custom_object(
                    "keda.sh", "v1alpha1", ns, "scaledobjects", "scaled"
                )
            )
        ),
        what="the ScaledObject deleted",
    )
