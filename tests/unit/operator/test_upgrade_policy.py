"""What a new operator version re-applies under live servings and trainings (no cluster).

The "old operator" is this one's builders; the "new operator" is the same builders with a
constant changed (monkeypatched), as a release that adds a probe default or a grace period would.
Its pod template differs from the running one (asserted), so each test can tell a roll from a hold.
"""

import copy
import hashlib
import json
import logging

import pytest
from prometheus_client import CollectorRegistry

from soundmind.api.serving import ServingSpec
from soundmind.api.training import TrainingSpec
from soundmind_operator import children, metrics
from soundmind_operator.cache import Owned
from soundmind_operator.kube import Kube
from soundmind_operator.serving import builders, names
from soundmind_operator.serving import reconcile as serving_reconcile
from soundmind_operator.serving.observe import POD_TEMPLATE_CURRENT
from soundmind_operator.training import builders as training_builders
from soundmind_operator.training import reconcile as training_reconcile

PLATFORM = builders.Platform(keda=True, service_monitors=True)
MODEL = builders.ModelSource("Qwen/Qwen2.5-Omni-7B")
DEPLOYMENT = ("Deployment", names.deployment("s"))


def spec(**wire) -> ServingSpec:
    return ServingSpec.model_validate({"model": MODEL.path, "autoscaling": {"enabled": False}, "replicas": 2, **wire})


def built(serving: ServingSpec, rollout: str = "") -> dict[tuple[str, str], dict]:
    made = children.stamp_all(builders.build_children("s", "ns", serving, MODEL, PLATFORM, rollout))
    return {(c["kind"], c["metadata"]["name"]): c for c in made}


def as_stored(child: dict) -> dict:
    """A child as the API server keeps it: defaults filled in, a status."""
    stored = copy.deepcopy(child)
    template = (stored.get("spec") or {}).get("template")
    if template is not None:
        template["spec"]["dnsPolicy"] = "ClusterFirst"
        template["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    stored["status"] = {"observedGeneration": 1}
    return stored


def running(serving: ServingSpec, rollout: str = "") -> dict[tuple[str, str], dict]:
    return {key: as_stored(child) for key, child in built(serving, rollout).items()}


def upgrade(monkeypatch) -> None:
    """The next release: a longer preStop delay in the pod template, nothing in the spec."""
    before = built(spec())[DEPLOYMENT]["spec"]["template"]
    monkeypatch.setattr(builders, "PRESTOP_SECONDS", builders.PRESTOP_SECONDS + 5)
    assert built(spec())[DEPLOYMENT]["spec"]["template"] != before, "the new operator must build another template"


def applied(plan: children.Plan) -> dict[tuple[str, str], dict]:
    return {(c["kind"], c["metadata"]["name"]): c for c in plan.apply}


def test_a_new_operator_keeps_the_running_pod_template_and_says_it_holds_one(monkeypatch):
    old = running(spec())
    upgrade(monkeypatch)
    plan = children.plan(built(spec()).values(), old)
    deployment = applied(plan)[DEPLOYMENT]
    assert deployment["spec"]["template"] == old[DEPLOYMENT]["spec"]["template"], "running pods would restart"
    assert plan.held == (DEPLOYMENT[1],) and plan.rolled == ()
    # The Deployment is stamped as applied, so the next pass applies nothing more.
    again = {**old, DEPLOYMENT: as_stored(deployment)}
    settled = children.plan(built(spec()).values(), again)
    assert settled.apply == () and settled.held == (DEPLOYMENT[1],)


def test_an_operator_change_outside_the_pod_template_is_applied_in_place(monkeypatch):
    old = running(spec())
    monkeypatch.setattr(builders, "KEDA_POLLING_SECONDS", 30)  # the ScaledObject only
    plan = children.plan(built(spec(autoscaling={"enabled": True})).values(), old)
    assert applied(plan)[("ScaledObject", names.autoscaler("s"))]["spec"]["pollingInterval"] == 30


@pytest.mark.parametrize(
    "changed",
    [{"image": "registry.example/vllm:next"}, {"vllm": {"maxModelLen": 16384}}, {"drainSeconds": 600}],
)
def test_a_spec_change_rolls_onto_the_new_operators_template(monkeypatch, changed):
    old = running(spec())
    upgrade(monkeypatch)
    plan = children.plan(built(spec(**changed)).values(), old)
    assert applied(plan)[DEPLOYMENT]["spec"]["template"] == built(spec(**changed))[DEPLOYMENT]["spec"]["template"]
    assert plan.held == ()


def test_scaling_a_serving_changes_replicas_but_rolls_no_pod(monkeypatch):
    old = running(spec(replicas=2))
    upgrade(monkeypatch)
    plan = children.plan(built(spec(replicas=3)).values(), old)
    deployment = applied(plan)[DEPLOYMENT]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["template"] == old[DEPLOYMENT]["spec"]["template"]
    assert plan.held == (DEPLOYMENT[1],)


# A changed value for each of `builders.SCALING_FIELDS` (by field name), some several.
SCALING_CHANGES = {
    "replicas": [{"replicas": 5}],
    "autoscaling": [
        {"autoscaling": {"enabled": True}},
        {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "target": 3}},
        {
            "autoscaling": {
                "enabled": True,
                "metric": "kv_cache_usage",
                "target": 0.8,
                "scaleDownStabilizationSeconds": 60,
            }
        },
    ],
}


def test_every_field_left_out_of_the_pod_inputs_is_shown_to_shape_no_pod():
    assert set(SCALING_CHANGES) == builders.SCALING_FIELDS


@pytest.mark.parametrize("scaling", [change for changes in SCALING_CHANGES.values() for change in changes])
def test_the_scaling_fields_left_out_of_the_pod_inputs_never_shape_a_pod(scaling):
    """`SCALING_FIELDS` may leave out of the pod inputs only what cannot change a pod."""
    before, after = built(spec())[DEPLOYMENT], built(spec(**scaling))[DEPLOYMENT]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert (
        after["metadata"]["annotations"][children.POD_INPUTS_ANNOTATION]
        == (before["metadata"]["annotations"][children.POD_INPUTS_ANNOTATION])
    )


def test_the_rollout_annotation_rolls_the_replicas_onto_the_new_template(monkeypatch):
    old = running(spec())
    upgrade(monkeypatch)
    plan = children.plan(built(spec(), rollout="2026-12-07").values(), old)
    assert applied(plan)[DEPLOYMENT]["spec"]["template"] == built(spec())[DEPLOYMENT]["spec"]["template"]
    assert plan.held == () and plan.rolled == ()


def test_a_bumped_template_version_rolls_every_serving_and_names_the_versions(monkeypatch):
    old = running(spec())
    upgrade(monkeypatch)
    monkeypatch.setattr(builders, "POD_TEMPLATE_VERSION", builders.POD_TEMPLATE_VERSION + 1)
    plan = children.plan(built(spec()).values(), old)
    assert applied(plan)[DEPLOYMENT]["spec"]["template"] == built(spec())[DEPLOYMENT]["spec"]["template"]
    after = builders.POD_TEMPLATE_VERSION
    assert plan.rolled == (children.Rolled(DEPLOYMENT[1], after - 1, after),) and plan.held == ()


def test_non_pod_children_an_operator_changes_are_applied_as_built():
    old = running(spec())
    new = built(spec())
    for key, child in list(new.items()):
        if key != DEPLOYMENT:
            changed = copy.deepcopy(child)
            changed["metadata"]["labels"]["example.com/new-in-this-release"] = "yes"
            new[key] = children.stamped(changed)
    plan = children.plan(new.values(), old)
    assert set(applied(plan)) == set(new) - {DEPLOYMENT}
    assert all(applied(plan)[key] == new[key] for key in applied(plan))


def without_policy_stamps(child: dict) -> dict:
    """A child as an operator older than this policy stamped it: the applied hash alone."""
    older = copy.deepcopy(child)
    annotations = older["metadata"]["annotations"]
    annotations.pop(children.POD_INPUTS_ANNOTATION, None)
    annotations.pop(children.POD_TEMPLATE_ANNOTATION, None)
    annotations[children.HASH_ANNOTATION] = "0123456789abcdef"
    return older


@pytest.mark.parametrize(("spec_reconciled", "rolls"), [(True, False), (False, True)])
def test_a_deployment_from_before_the_policy_rolls_only_for_a_spec_it_has_not_seen(spec_reconciled, rolls):
    old = {key: without_policy_stamps(child) for key, child in running(spec()).items()}
    plan = children.plan(built(spec()).values(), old, spec_reconciled=spec_reconciled)
    deployment = applied(plan)[DEPLOYMENT]
    kept = deployment["spec"]["template"] == old[DEPLOYMENT]["spec"]["template"]
    assert kept != rolls
    assert plan.held == (() if rolls else (DEPLOYMENT[1],))
    assert plan.rolled == (), "a spec change is not a template version's roll"


def test_a_deployment_from_before_the_policy_built_as_this_operator_builds_it_is_current():
    """The first upgrade to this policy must not call every serving held: an older operator's hash
    of the very manifest this one builds (less the new stamps) shows its template is ours."""
    old = running(spec())
    built_before = copy.deepcopy(built(spec())[DEPLOYMENT])
    del built_before["metadata"]["annotations"]
    before_policy = copy.deepcopy(old[DEPLOYMENT])
    # The hash as children.stamped computed it before this policy (b4ce7c0).
    old_hash = hashlib.sha256(json.dumps(built_before, sort_keys=True).encode()).hexdigest()[:16]
    before_policy["metadata"]["annotations"] = {children.HASH_ANNOTATION: old_hash}
    plan = children.plan(built(spec()).values(), {**old, DEPLOYMENT: before_policy}, spec_reconciled=True)
    assert plan.held == () and plan.rolled == ()
    assert applied(plan)[DEPLOYMENT] == built(spec())[DEPLOYMENT], "applied as built: the same template, now stamped"


def test_a_child_with_a_pod_template_must_declare_its_pod_inputs():
    deployment = builders.build_deployment("s", spec(), MODEL, PLATFORM)
    del deployment["metadata"]["annotations"][children.POD_INPUTS_ANNOTATION]
    with pytest.raises(ValueError, match=f"Deployment s: .*{children.POD_INPUTS_ANNOTATION}"):
        children.stamped(deployment)


def test_a_training_re_applies_no_pod_template():
    """A training's pods come from its Job, created once per attempt (never re-applied): a new
    operator's Job reaches the next attempt, and nothing it re-applies can restart a pod."""
    training = TrainingSpec.model_validate({"image": "t", "resources": {"nodes": 2}})
    made = training_builders.build_children("t", training)
    assert made and all("template" not in (c.get("spec") or {}) for c in made)


# -- the serving's pass, end to end: what it writes to the API and says in status -----------------


class RecordingKube(Kube):
    def __init__(self):
        super().__init__(api=None)
        self.applied: list[dict] = []
        self.status_patches: list[dict] = []

    def request(self, method, path, body=None, *, content_type="application/json", query=None):
        if path.endswith("/status"):
            self.status_patches.append(body)
            return {"metadata": {"resourceVersion": "2"}}
        assert method == "PATCH" and content_type == "application/apply-patch+yaml", (method, path)
        self.applied.append(json.loads(body))
        return json.loads(body)


def serving_body(status: dict, annotations: dict | None = None) -> dict:
    return {
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "1",
            "generation": 1,
            "annotations": annotations or {},
        },
        "spec": spec().model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status,
    }


MEMOS = (serving_reconcile._desired_children, training_reconcile._desired_children, training_reconcile._job_template)


@pytest.fixture(autouse=True)
def fresh_memo():
    """A process runs one operator version; these tests run two, so the built children's memo goes."""
    for memo in MEMOS:
        memo.cache_clear()
    yield
    for memo in MEMOS:
        memo.cache_clear()


def owned(children_by_key: dict) -> Owned:
    by_kind: dict[str, list[dict]] = {}
    for (kind, _), child in children_by_key.items():
        by_kind.setdefault(kind, []).append(child)
    return Owned(by_kind)


def test_a_serving_pass_under_a_new_operator_rolls_nothing_and_says_so(monkeypatch):
    old = running(spec())
    upgrade(monkeypatch)
    kube = RecordingKube()
    reconciler = serving_reconcile.ServingReconciler(kube, metrics.OperatorMetrics(CollectorRegistry()), PLATFORM)
    status = {"observedGeneration": 1}
    outcome = reconciler.reconcile(
        serving_body(status), serving_reconcile.ServingCache(owned(old), None), logging.getLogger("test")
    )
    deployments = [c for c in kube.applied if c["kind"] == "Deployment"]
    assert [d["spec"]["template"] for d in deployments] == [old[DEPLOYMENT]["spec"]["template"]]
    (patch,) = kube.status_patches
    current = next(c for c in patch["status"]["conditions"] if c["type"] == POD_TEMPLATE_CURRENT)
    assert (current["status"], current["reason"]) == ("False", "OperatorChangeHeld")
    assert f"kubectl annotate sms s {children.ROLLOUT_ANNOTATION}=" in current["message"]
    assert [e.reason for e in outcome.events if e.reason == "OperatorChangeHeld"] == ["OperatorChangeHeld"]

    # The next pass: nothing to apply, the hold still said, and not told again.
    kube.applied.clear()
    held = {**status, "conditions": patch["status"]["conditions"]}
    settled = {**old, DEPLOYMENT: as_stored(deployments[0])}
    again = reconciler.reconcile(
        serving_body(held), serving_reconcile.ServingCache(owned(settled), None), logging.getLogger("test")
    )
    assert kube.applied == [] and not [e for e in again.events if e.reason == "OperatorChangeHeld"]

    # The user rolls: the annotation is a pod input, so the new template goes out and the hold ends.
    rolled = reconciler.reconcile(
        serving_body(held, {children.ROLLOUT_ANNOTATION: "1765130000"}),
        serving_reconcile.ServingCache(owned(settled), None),
        logging.getLogger("test"),
    )
    (deployment,) = [c for c in kube.applied if c["kind"] == "Deployment"]
    assert deployment["spec"]["template"] == built(spec())[DEPLOYMENT]["spec"]["template"]
    assert [e.reason for e in rolled.events if e.reason == "Current"] == ["Current"]


def test_a_bumped_template_version_is_an_event_on_each_serving(monkeypatch):
    old = running(spec())
    monkeypatch.setattr(builders, "POD_TEMPLATE_VERSION", builders.POD_TEMPLATE_VERSION + 1)
    kube = RecordingKube()
    reconciler = serving_reconcile.ServingReconciler(kube, metrics.OperatorMetrics(CollectorRegistry()), PLATFORM)
    outcome = reconciler.reconcile(
        serving_body({"observedGeneration": 1}),
        serving_reconcile.ServingCache(owned(old), None),
        logging.getLogger("test"),
    )
    (event,) = [e for e in outcome.events if e.reason == "PodTemplateVersion"]
    after = builders.POD_TEMPLATE_VERSION
    assert f"version {after} (was {after - 1})" in event.message
    assert any(c["kind"] == "Deployment" for c in kube.applied)


# -- a training's pass: its running attempt keeps its Job, and says whose template its pods run ----------

TRAINING_SPEC = TrainingSpec.model_validate({"image": "t", "resources": {"nodes": 2}})


def test_a_job_records_the_pod_template_it_was_built_with():
    job = training_builders.build_job("t", "ns", TRAINING_SPEC, 1)
    recorded = job["metadata"]["annotations"][children.POD_TEMPLATE_ANNOTATION]
    assert recorded == children.pod_template_hash(job)
    assert (
        training_builders.build_job("t", "ns", TRAINING_SPEC, 1, active_deadline_seconds=60)["metadata"]
        == (job["metadata"])
    ), "a deadline is the Job's, not its pods'"
    other = training_builders.build_job("t", "ns", TRAINING_SPEC.model_copy(update={"image": "u"}), 1)
    assert other["metadata"]["annotations"][children.POD_TEMPLATE_ANNOTATION] != recorded


def training_body(status: dict) -> dict:
    return {
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "resourceVersion": "1", "generation": 1},
        "spec": TRAINING_SPEC.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status,
    }


def training_pass(kube: RecordingKube, status: dict, job: dict):
    """A pass over a training whose attempt 1 is `job`, suspended (no pods to observe)."""
    reconciler = training_reconcile.TrainingReconciler(kube, metrics.OperatorMetrics(CollectorRegistry()))
    stored = {**job, "metadata": {**job["metadata"], "uid": "j"}, "status": {}}
    cache = training_reconcile.TrainingCache(Owned({"Job": [stored]}))
    outcome = reconciler.reconcile(training_body(status), cache, logging.getLogger("test"))
    decided = outcome.detail.status  # the status the pass decided (written when it changed)
    found = next((c for c in decided["conditions"] if c["type"] == POD_TEMPLATE_CURRENT), None)
    return outcome, found


def test_a_training_under_a_new_operator_keeps_its_jobs_template_and_says_so(monkeypatch):
    earlier = training_builders.build_job("t", "ns", TRAINING_SPEC, 1)
    status = {"phase": "Running", "attempt": 1, "jobName": "t-a1", "observedGeneration": 1}
    kube = RecordingKube()
    _, current = training_pass(kube, status, earlier)
    assert (current["status"], current["reason"]) == ("True", "Current")

    # The next release builds the pods otherwise; the running attempt's Job stays as it is.
    monkeypatch.setattr(training_builders, "METRICS_PORT_NAME", "trainer-metrics")
    assert children.pod_template_hash(training_builders.build_job("t", "ns", TRAINING_SPEC, 1)) != (
        children.pod_template_hash(earlier)
    ), "the new operator must build another template"
    training_reconcile._job_template.cache_clear()
    kube = RecordingKube()
    outcome, held = training_pass(kube, status, earlier)
    assert not [c for c in kube.applied if c["kind"] == "Job"], "a Job is never applied again"
    assert (held["status"], held["reason"]) == ("False", children.OPERATOR_CHANGE_HELD)
    assert "next attempt" in held["message"] and "kubectl delete job t-a1 -n ns" in held["message"]
    assert [e.reason for e in outcome.events if e.reason == children.OPERATOR_CHANGE_HELD] == [
        children.OPERATOR_CHANGE_HELD
    ]

    # Said once: the next pass keeps the condition and posts no event.
    again, still = training_pass(kube, {**status, "conditions": [held]}, earlier)
    assert still == held
    assert not [e for e in again.events if e.reason == children.OPERATOR_CHANGE_HELD]

    # The next attempt's Job is this operator's: the hold ends, and that is news.
    status_a2 = {**status, "attempt": 2, "jobName": "t-a2", "conditions": [held]}
    ended, current = training_pass(kube, status_a2, training_builders.build_job("t", "ns", TRAINING_SPEC, 2))
    assert (current["status"], current["reason"]) == ("True", "Current")
    assert [e.reason for e in ended.events if e.reason == "Current"] == ["Current"]


def test_a_job_that_does_not_record_its_template_is_unknown_not_current():
    job = training_builders.build_job("t", "ns", TRAINING_SPEC, 1)
    del job["metadata"]["annotations"]  # as an operator before the record made it
    status = {"phase": "Running", "attempt": 1, "jobName": "t-a1", "observedGeneration": 1}
    _, found = training_pass(RecordingKube(), status, job)
    assert (found["status"], found["reason"]) == ("Unknown", "NotRecorded")
    assert "kubectl delete job t-a1 -n ns" in found["message"]
