"""The model record (finetune_flow.json) as one typed record: what it accepts, refuses and writes."""

from __future__ import annotations

import json

import pytest

from tasks.bundle import ModelMeta, read_meta, write_meta

TRAINED = {
    "task": "multi_label",
    "labels": ["a", "b"],
    "max_length": 64,
    "base_model": "minilm",
    "config_digest": "c0ffee",
    "data_digest": "d00d",
    "long_text": {"mode": "truncate"},
    "training": {"epochs": 2},
}


def test_a_model_folder_record_round_trips_without_the_bundle_parts(tmp_path):
    write_meta(tmp_path, ModelMeta.model_validate(TRAINED))
    written = json.loads((tmp_path / "finetune_flow.json").read_text())
    assert written == TRAINED  # no decision, serving file or text rules in a trained model's folder
    bundle = read_meta(tmp_path).model_copy(
        update={"serving_file": "model.onnx", "decision": {"calibration": "temperature", "thresholds": [0.3, 0.6]}}
    )
    write_meta(tmp_path, ModelMeta.model_validate(bundle.model_dump()))
    back = read_meta(tmp_path)
    assert back.serving_file == "model.onnx" and back.decision is not None and back.decision.thresholds == [0.3, 0.6]
    assert back.as_dict()["decision"]["threshold"] is None  # inside the decision every key stays
    regression = ModelMeta.model_validate({**TRAINED, "task": "regression", "labels": None})
    assert regression.as_dict()["labels"] is None  # a regression model says it has no labels


def test_a_broken_record_fails_on_load_naming_the_file_and_the_field(tmp_path):
    (tmp_path / "finetune_flow.json").write_text(json.dumps({**TRAINED, "max_length": "long", "extra": 1}))
    with pytest.raises(ValueError) as e:
        read_meta(tmp_path)
    assert "finetune_flow.json is not a finetune-flow model record" in str(e.value)
    assert "max_length" in str(e.value) and "extra" in str(e.value)
    with pytest.raises(ValueError, match="has no finetune_flow.json"):
        read_meta(tmp_path / "elsewhere")
