"""The reference check (claims exist and are bound, some node offers the GPUs with the node
selector's labels), the scheduler's opaque errors made specific by it, and which node changes wake
whom: pure functions, no cluster."""

import pytest

from soundmind.api.serving import SERVING, ServingSpec
from soundmind.api.training import TRAINING, TrainingSpec
from soundmind_operator import references
from soundmind_operator.references import ClaimView, NodeVerdicts, NodeView, Problem, Seen

OPAQUE = 'error in "DynamicResources" PodGroupPostFilter plugins: not found'


def node(name="sim-gpu-0", gpus="8", resource="nvidia.com/gpu", schedulable=True, **labels) -> NodeView:
    body = {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {} if schedulable else {"unschedulable": True},
        "status": {"allocatable": {"cpu": "64", "memory": "512Gi", resource: gpus}},
    }
    return references.node_view(body)


def training(**wire) -> references.Needs:
    return references.training_needs(TrainingSpec.model_validate(wire))


def serving(**wire) -> references.Needs:
    return references.serving_needs(ServingSpec.model_validate({"model": "m", **wire}))


BOUND = ClaimView("Bound")
ALL_BOUND = {"soundmind-checkpoints": BOUND, "alr-data": BOUND, "models": BOUND}


def test_a_training_with_bound_claims_on_nodes_that_fit_has_no_problem():
    assert references.problems("ns", training(), Seen(ALL_BOUND, (node(),))) == []


def test_missing_lost_and_pending_claims_name_the_spec_field_and_the_claim():
    seen = Seen({"soundmind-checkpoints": ClaimView("Lost"), "models": ClaimView("Pending")}, (node(),))
    assert references.problems("ns", training(), seen) == [
        Problem("ClaimNotFound", 'spec.storage.data.claimName: PersistentVolumeClaim "alr-data" not found in ns'),
        Problem(
            "ClaimLost",
            'spec.storage.checkpoints.claimName: PersistentVolumeClaim "soundmind-checkpoints" is Lost '
            "(its volume is gone)",
        ),
        Problem(
            "ClaimNotBound",
            'spec.storage.models.claimName: PersistentVolumeClaim "models" is Pending, not bound to a volume',
            warn=False,
            note="normal until the first pod is scheduled when its StorageClass binds on first use",
        ),
    ]


def test_a_serving_checks_its_models_claim():
    assert references.problems("ns", serving(storage={"models": {"claimName": "weights"}}), Seen({}, ())) == [
        Problem("ClaimNotFound", 'spec.storage.models.claimName: PersistentVolumeClaim "weights" not found in ns')
    ]


@pytest.mark.parametrize(
    ("needs", "nodes", "message"),
    [
        (
            serving(resources={"gpuResource": "amd.com/gpu"}),
            [node("a"), node("b")],
            "spec.resources.gpuResource: no node offers amd.com/gpu",
        ),
        (
            serving(resources={"nodeSelector": {"pool": "h200"}}),
            [node("a", pool="h100")],
            "spec.resources.nodeSelector: no schedulable node has the labels pool=h200",
        ),
        (
            serving(resources={"nodeSelector": {"pool": "h100"}, "gpuResource": "amd.com/gpu"}),
            [node("a", pool="h100"), node("b", resource="amd.com/gpu", pool="mi300")],
            "spec.resources.gpuResource: no node matching spec.resources.nodeSelector (pool=h100) offers amd.com/gpu",
        ),
        (
            serving(vllm={"tensorParallelSize": 16}),
            [node("a"), node("b", gpus="4")],
            "spec.vllm.tensorParallelSize: 16 nvidia.com/gpu per pod, but no node offers that many (at most 8)",
        ),
        (
            training(resources={"nodes": 3}, algorithm={"trainBatchSize": 24}),
            [node("sim-gpu-1"), node("sim-gpu-0"), node("small", gpus="4")],
            "spec.resources.nodes: 3 pods need a node each with 8 nvidia.com/gpu, but only 2 node(s) offer that many "
            "(sim-gpu-0, sim-gpu-1)",
        ),
        (
            serving(resources={"nodeSelector": {"pool": "h100"}}),
            [node("a", pool="h100", schedulable=False)],  # cordoned
            "spec.resources.nodeSelector: no schedulable node has the labels pool=h100",
        ),
        (serving(), [node("a", schedulable=False)], "no node takes pods: every node is cordoned (spec.unschedulable)"),
    ],
)
def test_a_placement_no_node_offers_names_the_field_and_what_is_missing(needs, nodes, message):
    seen = Seen({claim: BOUND for _, claim in needs.claims}, tuple(nodes))
    assert references.problems("ns", needs, seen) == [Problem("NoMatchingNode", message)]


def test_no_nodes_seen_says_nothing_of_nodes():
    """The node watch delivered none (or is not allowed): no false alarm."""
    assert references.node_problem(serving(resources={"gpuResource": "amd.com/gpu"}).nodes, ()) is None


def test_problems_come_worst_first():
    needs = serving(resources={"gpuResource": "amd.com/gpu"})
    found = references.problems("ns", needs, Seen({"models": ClaimView("Pending")}, (node(),)))
    assert [p.reason for p in found] == ["NoMatchingNode", "ClaimNotBound"]


def test_an_opaque_scheduler_error_is_replaced_by_the_cause_the_check_finds():
    missing = Problem("ClaimNotFound", 'spec.storage.data.claimName: PersistentVolumeClaim "alr-data" not found in ns')
    reason, said = references.explain(
        [OPAQUE, "0/3 nodes are available: 3 Insufficient cpu."], [missing], "Unschedulable"
    )
    assert reason == "ClaimNotFound"
    assert said == [
        f'spec.storage.data.claimName: PersistentVolumeClaim "alr-data" not found in ns (the scheduler says: {OPAQUE})',
        "0/3 nodes are available: 3 Insufficient cpu.",
    ]


def test_a_certain_cause_leads_even_where_the_scheduler_says_something_clear():
    missing = Problem("NoMatchingNode", "spec.resources.gpuResource: no node offers amd.com/gpu")
    assert references.explain(["0/3 nodes are available: 3 Insufficient amd.com/gpu."], [missing], "Unschedulable") == (
        "NoMatchingNode",
        [
            "spec.resources.gpuResource: no node offers amd.com/gpu",
            "0/3 nodes are available: 3 Insufficient amd.com/gpu.",
        ],
    )


PENDING = 'spec.storage.models.claimName: PersistentVolumeClaim "m" is Pending'


def test_without_a_certain_cause_the_schedulers_clear_words_stay():
    pending = Problem("ClaimNotBound", PENDING, warn=False)
    assert references.explain(["0/2 nodes"], [pending], "Unschedulable") == ("Unschedulable", ["0/2 nodes"])
    assert references.explain(["0/2 nodes"], [], "Unschedulable") == ("Unschedulable", ["0/2 nodes"])
    assert references.explain([OPAQUE], [], "Unschedulable") == ("Unschedulable", [OPAQUE])


def test_a_plugins_bare_error_beside_a_pending_claim_names_the_claim():
    """A claim whose StorageClass does not exist stays Pending, and the scheduler says only
    `error in "DynamicResources" PodGroupPostFilter plugins: not found` (seen on the local cluster)."""
    pending = Problem("ClaimNotBound", PENDING, warn=False)
    assert references.explain([OPAQUE, "0/3 nodes"], [pending], "Unschedulable") == (
        "ClaimNotBound",
        [f"{PENDING} (the scheduler says: {OPAQUE})", "0/3 nodes"],
    )


def test_needs_of_a_raw_spec_and_the_index_entries_that_route_watch_events():
    needs = references.needs_of(TRAINING.kind, {"image": "x", "storage": {"data": {"claimName": "alr"}}})
    assert needs is not None and ("spec.storage.data.claimName", "alr") in needs.claims
    assert references.needs_of(TRAINING.kind, {"resources": {"nodes": 0}}) is None  # refused: the pass says so
    entries = references.users("ns", "t", needs)
    assert entries[("claim", "ns", "alr")] == "t" and entries[("nodes", needs.nodes)] == ("ns", "t")
    assert references.needs_of(SERVING.kind, {"model": "m"}).nodes.gpus_field == "spec.vllm.tensorParallelSize"


def test_a_heartbeat_wakes_nobody_and_a_new_node_only_those_it_helps():
    verdicts = NodeVerdicts()
    fits, too_big = training().nodes, training(resources={"gpusPerNode": 16}).nodes
    assert verdicts.seen("a", node("a"))
    assert verdicts.changed([fits, too_big]) == {too_big}  # the first verdict of a failing need
    assert not verdicts.seen("a", node("a")), "the same labels and allocatable: a heartbeat"
    assert verdicts.seen("b", node("b", gpus="16"))
    assert verdicts.changed([fits, too_big]) == {too_big}, "the 16-GPU node helps only the 16-GPU need"
    assert verdicts.seen("b", None)
    assert verdicts.changed([fits, too_big]) == {too_big}, "and its deletion hurts only it"
    assert verdicts.changed([fits, too_big]) == set()
