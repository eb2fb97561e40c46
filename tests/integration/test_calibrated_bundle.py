"""Calibration end to end: one small real pipeline whose bundle carries the temperature and decision
threshold that the core, the export parity check and the service apply (the maths is in tests/unit).
"""

from __future__ import annotations

import numpy as np
import pytest

from tasks.inference.decode import softmax
from tests.support import run_pipeline, small_config

pytestmark = pytest.mark.slow


def test_bundle_carries_temperature_and_threshold_that_every_scorer_applies(tmp_path):
    """A small real run: the bundle's T and threshold, the core's probabilities against softmax(torch logits / T)."""
    from fastapi.testclient import TestClient

    from deploy.service import create_app
    from tasks.inference.predictor import OnnxPredictor
    from tasks.io import read_frame, read_json
    from tasks.modelling.evaluate import load_trained
    from tasks.modelling.predict import predict_logits, torch_forward

    cfg = small_config(
        tmp_path, "data.labels=[negative, positive]", "export.quantize=false", "decision.threshold={max_f1: positive}"
    )
    clean_ref, evaluation, exported = run_pipeline(cfg, tmp_path)
    record, m = evaluation.decision, evaluation.metrics
    meta = read_json(tmp_path / "onnx" / "finetune_flow.json")
    assert read_json(tmp_path / "evaluation" / "decision.json") == record  # what a resumed export reads
    assert {k: meta["decision"][k] for k in record} == record and record["positive_label"] == "positive"
    assert "decision" not in read_json(tmp_path / "model" / "finetune_flow.json")
    assert m["test_ece_before"] == record["test"]["ece_before"] and m["test_ece_after"] == record["test"]["ece_after"]
    t, thr = record["temperature"], record["threshold"]
    assert t != 1.0 and 0 < thr < 1 and record["validation"]["nll_after"] <= record["validation"]["nll_before"]
    assert m["calibration_temperature"] == t and m["decision_threshold"] == thr
    assert (tmp_path / "evaluation" / "reliability_diagram.png").read_bytes()[:4] == b"\x89PNG"
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"Temperature {t:.4f}" in card and "best F1 of 'positive'" in card
    assert m["test_ece_floor"] == record["test"]["ece_floor"] > 0
    assert f"would show about {m['test_ece_floor']:.4f} on {record['test']['rows']} rows" in card
    assert exported.parity["passed"] and exported.parity["temperature"] == t

    test = read_frame(clean_ref.splits["test"])
    model, tok, _ = load_trained(tmp_path / "model")
    logits = np.stack(predict_logits(torch_forward(model), tok, test, "classification", cfg.model.max_length))
    served = OnnxPredictor(tmp_path / "onnx").predict_frame(test)
    expected = softmax(logits / t)
    np.testing.assert_allclose(served.probabilities, expected, atol=1e-4)
    assert served.predictions.tolist() == np.where(expected[:, 1] >= thr, 1, 0).tolist()

    with TestClient(create_app(bundle_dir=str(tmp_path / "onnx"))) as client:
        info = client.get("/model").json()
        assert (info["temperature"], info["threshold"], info["positive_label"]) == (t, thr, "positive")
        text = str(test["text"].iloc[0])
        answer = client.post("/predict", json={"text": text}).json()["predictions"][0]
    p = OnnxPredictor(tmp_path / "onnx").score([text]).probabilities[0]
    assert answer["scores"]["positive"] == pytest.approx(float(p[1]), abs=1e-6)
