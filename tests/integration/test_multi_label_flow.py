"""Multi-label end to end: the packaged preset through the flow to a registered version, then batch scoring,
the service (label sets with every label's probability), feedback with corrected label sets and the feedback
source that retrains on them. Real weights, real ONNX Runtime, a real MLflow store; a few training steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support import ROOT, running

NAME = "test-multi-label"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(prediction_log, tmp_path_factory):
    from flows.training import fine_tune
    from tasks.config import load_config
    from tasks.registry import register

    tmp = tmp_path_factory.mktemp("multi")
    cfg = load_config(
        ROOT / "configs" / "tweet_entity_types.yaml",
        [
            "data.max_rows=700",
            "data.validation.min_rows=50",
            "data.validation.min_class_rows=2",
            "model.max_length=32",
            "training.epochs=1",
            "training.min_updates=0",
            "training.learning_rate=3e-4",
            f"run_dir={tmp / 'runs'}",
            f"registry.model_name={NAME}",
            "registry.experiment=tests-multi-label",
            "registry.allow_below_baseline=true",
        ],
    )
    result = fine_tune(config=cfg)
    reg = result["registered"]
    register.set_alias(NAME, register.CHAMPION, reg["version"])
    return result


@pytest.fixture(scope="module")
def prediction_log(tmp_path_factory):
    """The service's and feedback's log in a folder of this module's own."""
    env = pytest.MonkeyPatch()
    env.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path_factory.mktemp("log")))
    env.setenv("FTFLOW_LOG_TEXTS", "1")  # the feedback source trains on the logged texts
    yield
    env.undo()


def test_the_run_writes_multi_label_evidence_and_per_label_decisions(trained):
    run = Path(trained["run_dir"])
    m = trained["metrics"]
    assert {"test_f1_micro", "test_f1_macro", "test_f1_samples", "test_subset_accuracy", "test_hamming_loss"} <= set(m)
    assert m["test_f1_micro_ci_low"] <= m["test_f1_micro"] <= m["test_f1_micro_ci_high"]
    assert "test_f1_person_ci_low" in m  # every label's F1 has its interval
    report = pd.read_csv(run / "evaluation" / "per_class_report.csv")
    assert {"class", "precision", "recall", "f1", "support", "tp", "fp", "fn", "tn"} <= set(report.columns)
    test_rows = len(pd.read_parquet(run / "data" / "clean" / "test.parquet"))
    assert (report[["tp", "fp", "fn", "tn"]].sum(axis=1) == test_rows).all()
    assert (report["tp"] + report["fn"] == report["support"]).all()
    meta = json.loads((run / "onnx" / "finetune_flow.json").read_text())
    decision = meta["decision"]
    assert meta["task"] == "multi_label" and len(decision["thresholds"]) == len(meta["labels"]) == 10
    assert len(decision["scales"]) == len(decision["biases"]) == 10
    assert all(0.0 < t <= 1.0 for t in decision["thresholds"])
    worst = pd.read_csv(run / "evaluation" / "worst_errors.csv")
    assert "mistakes" in worst.columns and worst["mistakes"].str.contains("missed|added").all()
    exported = json.loads((run / "onnx" / "export_report.json").read_text())
    assert exported["parity"]["passed"] and exported["int8"]["metric"] == "f1_micro"
    card = (run / "model" / "README.md").read_text()
    assert "Platt scaling per label" in card and "| person |" in card and "for **multi_label**" in card


def test_score_and_the_service_answer_label_sets_that_agree_with_the_export_gate(trained, tmp_path):
    from deploy.service import create_app
    from flows.score import score

    run = Path(trained["run_dir"])
    exported = json.loads((run / "onnx" / "export_report.json").read_text())
    served = "int8" if exported["serving_file"] == "model.int8.onnx" else "fp32"
    test = run / "data" / "clean" / "test.parquet"
    r = score(model=f"{NAME}@challenger", input=str(test), output=str(tmp_path / "scored.parquet"), workers=1)
    assert r["metrics"]["f1_micro"] == exported["int8"][served]  # the same rows, file and rule: exactly
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert all(isinstance(list(p), list) for p in scored["prediction"])
    assert all(len(p) == 10 for p in scored["probabilities"])

    with running(create_app(NAME, poll_seconds=0)) as url, httpx.Client(base_url=url, timeout=30) as client:
        info = client.get("/model").json()
        assert info["task"] == "multi_label" and set(info["label_thresholds"]) == set(info["labels"])
        texts = ["@jack loves the new iPhone from Apple in London", "good morning everyone"]
        answer = client.post("/predict", json={"texts": texts})
        assert answer.status_code == 200, answer.text
        from deploy.schemas import LabelSetAnswer, PredictResponse

        typed = PredictResponse.model_validate(answer.json())  # the answer /openapi.json declares
        assert all(isinstance(p, LabelSetAnswer) for p in typed.predictions)
        documented = client.get("/openapi.json").json()
        assert "LabelSetAnswer" in documented["components"]["schemas"]
        predictions = answer.json()["predictions"]
        thresholds = info["label_thresholds"]
        for p in predictions:
            assert set(p["scores"]) == set(info["labels"]) and isinstance(p["labels"], list)
            assert p["labels"] == [name for name in info["labels"] if p["scores"][name] >= thresholds[name]]
        ids = [p["request_id"] for p in predictions]

        stored = client.post("/feedback", json={"items": [{"request_id": ids[0], "label": ["person", "company"]}]})
        assert stored.status_code == 200, stored.text
        assert client.post("/feedback", json={"request_id": ids[1], "label": []}).status_code == 200
        unknown = client.post("/feedback", json={"request_id": ids[1], "label": ["person", "nobody"]})
        assert unknown.status_code == 422 and "'nobody'" in unknown.text and "person" in unknown.text
        plain = client.post("/feedback", json={"request_id": ids[1], "label": "person"})
        assert plain.status_code == 422 and "not a list of label names" in plain.text

    from tasks.monitoring.feedback import feedback_rows

    rows = feedback_rows(NAME).set_index("text")
    assert json.loads(rows.loc[texts[0], "label"]) == ["company", "person"]  # a set: sorted, as logged
    assert json.loads(rows.loc[texts[1], "label"]) == []

    # The feedback source reads them back as label sets, the empty one included.
    from tasks.config import load_config
    from tasks.data.collect import collect_data
    from tasks.io import read_frame

    cfg = load_config(None, ["data.task=multi_label", "data.source.kind=feedback", f"data.source.model_name={NAME}"])
    raw = read_frame(collect_data(cfg.data, tmp_path / "run").path).set_index("text")
    assert list(raw.loc[texts[0], "label"]) == ["company", "person"] and list(raw.loc[texts[1], "label"]) == []
