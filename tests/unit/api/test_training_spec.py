"""The SoundMindTraining model and the CRD generated from it."""

import pytest
from pydantic import ValidationError

from soundmind.api.training import MUTABLE_SPEC_FIELDS, TrainingSpec
from soundmind_operator import crds


def test_defaults_follow_the_design_contract():
    spec = TrainingSpec()
    assert spec.algorithm.rollout_n == 8
    assert spec.algorithm.learning_rate == pytest.approx(3.0e-7)
    assert spec.resources.gpus_per_node == 8 and spec.resources.nodes == 1
    assert spec.storage.checkpoints.claim_name == "soundmind-checkpoints"
    assert spec.to_api()["resources"]["gpuResource"] == "nvidia.com/gpu"


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"resources": {"gpusPerNode": 0}}, "resources.gpusPerNode"),
        ({"resources": {"nodes": 0}}, "resources.nodes"),
        ({"dataset": {"modality": "video"}}, "dataset.modality"),
        ({"resources": {"memory": "lots"}}, "resources.memory"),
        ({"algorithm": {"learningRate": 0}}, "algorithm.learningRate"),
        ({"rewards": {}}, "rewards"),
        ({"hfTokenSecret": {"name": "Bad_Name"}}, "hfTokenSecret.name"),
    ],
)
def test_bad_specs_name_the_field(patch, field):
    with pytest.raises(ValidationError) as err:
        TrainingSpec.model_validate(patch)
    assert field in str(err.value)


def test_batch_must_divide_across_gpus():
    with pytest.raises(ValidationError, match=r"trainBatchSize × algorithm.rolloutN .* 3 × 1 = 3 over 8 GPUs"):
        TrainingSpec.model_validate({"algorithm": {"trainBatchSize": 3, "rolloutN": 1}})


def test_committed_crds_match_the_types():
    """One source of truth: regenerate with `python -m soundmind_operator.crds --write`."""
    for name, crd in crds.all_crds().items():
        committed = (crds.CRD_DIR / name).read_text()
        assert committed == crds.render(crd), f"{name} drifted from soundmind.api; regenerate it"


def test_crd_schema_round_trips_the_model_defaults():
    """Defaults in the schema are the model's defaults, so the API server and the trainer agree."""
    schema = crds.training_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def defaults(node):
        if node.get("type") == "object" and "properties" in node:
            return {k: defaults(v) for k, v in node["properties"].items() if "default" in v}
        return node["default"]

    assert defaults(schema) == TrainingSpec().to_api()


def test_only_documented_fields_are_mutable():
    spec = crds.training_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    immutable = {k for k, v in spec["properties"].items() if "x-kubernetes-validations" in v}
    assert immutable.isdisjoint(MUTABLE_SPEC_FIELDS)
    assert immutable | set(MUTABLE_SPEC_FIELDS) == set(spec["properties"])


@pytest.mark.parametrize("crd", crds.all_crds().values(), ids=lambda c: c["spec"]["names"]["kind"])
def test_status_schema_is_the_status_model_and_refuses_unknown_keys(crd):
    """A mistyped status key is pruned by the API server instead of stored (kopf keeps its state in
    annotations, so nothing of its own lives under status)."""
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    assert {"phase", "conditions", "observedGeneration"} <= set(status["properties"])


def test_api_reference_is_generated_from_the_crds():
    assert crds.REFERENCE.read_text() == crds.reference(), (
        "docs/api.md drifted: python -m soundmind_operator.crds --write"
    )
    text = crds.reference()
    for field in ("spec.resources.gpusPerNode", "spec.vllm.extraArgs", "status.model.path", "spec.fromTraining.name"):
        assert f"`{field}`" in text, field
