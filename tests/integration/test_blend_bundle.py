"""model.blend auto end to end: the baselines' ONNX bag of words, the weight chosen on validation, and a
blended bundle that the export parity check, the core and the service answer with alike."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.inference.decode import softmax
from tests.support import prepare, small_config

pytestmark = pytest.mark.slow


def test_a_blended_bundle_answers_as_evaluation_scored_it(tmp_path):
    from fastapi.testclient import TestClient

    from deploy.service import create_app
    from tasks.inference.blend import BASELINE_FILE, BaselineScorer
    from tasks.inference.predictor import OnnxPredictor
    from tasks.io import read_frame, read_json
    from tasks.modelling.baselines import fit_baselines
    from tasks.modelling.evaluate import evaluate_model, load_trained
    from tasks.modelling.export import export_model
    from tasks.modelling.predict import predict_logits, torch_forward
    from tasks.modelling.train import train_model

    cfg = small_config(tmp_path, "model.blend=auto", "export.quantize=false", "baselines.kinds=[bag_of_words]")
    clean = prepare(cfg, tmp_path)
    baselines = fit_baselines(clean, cfg, tmp_path)
    assert baselines.onnx is not None and (tmp_path / "baselines" / "bag_of_words.onnx").is_file()
    trained = train_model(clean, cfg, tmp_path)
    evaluation = evaluate_model(trained.model_dir, clean, cfg, tmp_path, "test", baselines)
    chosen = evaluation.decision["blend"]
    assert 0.0 <= chosen["weight"] <= 1.0 and chosen["validation"]["rows"] > 0
    assert evaluation.metrics["blend_weight"] == chosen["weight"]
    assert "Blend (model.blend auto)" in (tmp_path / "model" / "README.md").read_text()

    # Whatever validation chose, the serving path is checked with a blend that moves answers: half and half.
    record = {**evaluation.decision, "blend": {**chosen, "weight": 0.5}}
    exported = export_model(trained.model_dir, clean, cfg, tmp_path, record)
    assert exported.parity["passed"] and exported.parity["blend_weight"] == 0.5
    bundle = tmp_path / "onnx"
    assert (bundle / BASELINE_FILE).is_file()
    assert read_json(bundle / "finetune_flow.json")["decision"]["blend"]["weight"] == 0.5

    test = read_frame(clean.splits["test"])
    model, tok, meta = load_trained(tmp_path / "model")
    logits = np.stack(predict_logits(torch_forward(model), tok, test, "classification", meta["max_length"]))
    base = BaselineScorer(bundle / BASELINE_FILE).probabilities(list(test["text"]))
    mixed = 0.5 * softmax(logits / chosen["temperature"]) + 0.5 * base
    expected = softmax(np.log(mixed) / record["temperature"])
    served = OnnxPredictor(bundle).predict_frame(test)
    np.testing.assert_allclose(served.probabilities, expected, atol=1e-4)
    assert not np.allclose(served.probabilities, softmax(logits / record["temperature"]), atol=1e-3)

    with TestClient(create_app(bundle_dir=str(bundle))) as client:
        assert client.get("/model").json()["blend_weight"] == 0.5
        text = str(test["text"].iloc[0])
        answer = client.post("/predict", json={"text": text}).json()["predictions"][0]
    p = OnnxPredictor(bundle).score([text]).probabilities[0]
    labels = meta["labels"]
    assert answer["scores"][labels[1]] == pytest.approx(float(p[1]), abs=1e-6)
