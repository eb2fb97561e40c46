"""Every task kind end to end through the plain functions: collect → clean → train → evaluate → export.

Sentence pairs (built here from the packaged movie reviews), regression (packaged human-rated
sentiment scores) and NER (packaged tweets); single-sentence classification runs through the
flow in test_flow.py. Real weights, a few training steps each: the point is that every stage
handles the kind and writes its evidence, not the scores.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.support import run_pipeline, small_config

pytestmark = pytest.mark.slow

EVIDENCE = ("metrics.json", "predictions.parquet", "worst_errors.csv", "per_class_report.csv", "confusion_matrix.png")


def write_pair_dataset(folder: Path, n: int = 240) -> Path:
    """Sentence pairs from real reviews: label 'same' when both have the same sentiment, else 'different'."""
    from tasks.config import SourceConfig
    from tasks.data.sources import read_source

    reviews = read_source(SourceConfig(kind="package", name="rotten_tomatoes")).head(2 * n)
    first, second = reviews.iloc[:n].reset_index(drop=True), reviews.iloc[n:].reset_index(drop=True)
    pairs = pd.DataFrame(
        {
            "sentence1": first["text"],
            "sentence2": second["text"],
            "relation": ["same" if a == b else "different" for a, b in zip(first["label"], second["label"])],
        }
    )
    path = folder / "pairs.csv"
    pairs.to_csv(path, index=False)
    return path


def assert_evidence(evaluation: dict, exported: dict, task: str) -> None:
    folder = Path(evaluation.dir)
    for name in EVIDENCE:
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    card = Path(evaluation.files["model_card"]).read_text()
    assert f"for **{task}**" in card and "## Intended use" in card and "## Limitations" in card
    assert ("## Weak classes" in card) == (task != "regression") and (folder / "weak_classes.json").is_file()
    assert exported.parity["passed"], exported.parity
    assert exported.int8_gate is not None and exported.serving_file in ("model.onnx", "model.int8.onnx")
    assert exported.parity["changed_rows"] == 0 and exported.parity["rows"] == exported.int8_gate["rows"] > 0
    assert 0.0 <= exported.int8_gate["changed_share"] <= 1.0
    from tasks.modelling.metrics import primary_metric

    m, key = evaluation.metrics, f"test_{primary_metric(task)}"
    assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"]  # the bootstrap interval brackets the score


def test_pair_classification_end_to_end(tmp_path):
    from tasks.inference.predictor import OnnxPredictor

    path = write_pair_dataset(tmp_path)
    cfg = small_config(
        tmp_path,
        "data.source.kind=file",
        f"data.source.path={path}",
        "data.task=pair_classification",
        "data.text_column=sentence1",
        "data.text_pair_column=sentence2",
        "data.label_column=relation",
        "training.max_steps=6",
    )
    clean_ref, evaluation, exported = run_pipeline(cfg, tmp_path / "run")
    assert clean_ref.labels == ["different", "same"]
    assert {"test_accuracy", "test_f1", "test_mcc", "test_f1_same"} <= set(evaluation.metrics)
    assert_evidence(evaluation, exported, "pair_classification")
    report = pd.read_csv(Path(evaluation.dir) / "per_class_report.csv")
    assert list(report["class"]) == ["different", "same"]
    worst = pd.read_csv(Path(evaluation.dir) / "worst_errors.csv")
    assert {"text", "text_pair", "prediction", "confidence"} <= set(worst.columns)

    answer = OnnxPredictor(exported.dir).predict(["a gem of a film"], ["a dreary mess"])[0]
    assert answer["label"] in ("different", "same") and set(answer["scores"]) == {"different", "same"}


def test_regression_end_to_end(tmp_path):
    from tasks.inference.predictor import OnnxPredictor

    cfg = small_config(tmp_path, "data.source.name=sentiment_scores", "data.task=regression", "training.max_steps=6")
    clean_ref, evaluation, exported = run_pipeline(cfg, tmp_path / "run")
    assert clean_ref.labels is None
    assert {"test_pearson", "test_spearman", "test_mse", "test_rmse", "test_mae"} <= set(evaluation.metrics)
    assert_evidence(evaluation, exported, "regression")
    assert (Path(evaluation.dir) / "prediction_scatter.png").exists()
    report = pd.read_csv(Path(evaluation.dir) / "per_class_report.csv")
    assert len(report) == 5 and report["support"].sum() == clean_ref.report["rows_out"]["test"]
    worst = pd.read_csv(Path(evaluation.dir) / "worst_errors.csv")
    assert worst["abs_error"].is_monotonic_decreasing
    assert exported.int8_gate["metric"] == "pearson"

    answer = OnnxPredictor(exported.dir).predict(["what a wonderful day"])[0]
    assert isinstance(answer["value"], float)


def test_ner_end_to_end(tmp_path):
    from tasks.inference.predictor import OnnxPredictor

    cfg = small_config(
        tmp_path,
        "data.source.name=tweet_ner",
        "data.task=ner",
        "data.max_rows=200",
        "training.max_steps=6",
        "training.learning_rate=3e-4",
    )
    clean_ref, evaluation, exported = run_pipeline(cfg, tmp_path / "run")
    assert clean_ref.labels[0] == "O" and "B-person" in clean_ref.labels
    assert {"test_precision", "test_recall", "test_f1", "test_accuracy", "test_f1_person"} <= set(evaluation.metrics)
    assert_evidence(evaluation, exported, "ner")
    report = pd.read_csv(Path(evaluation.dir) / "per_class_report.csv")
    assert "person" in set(report["class"]) and {"precision", "recall", "f1", "support"} <= set(report.columns)
    f1 = report.set_index("class")["f1"]  # weak entity types: those below 0.5 with test mentions
    expected = {c for c, row in report.set_index("class").iterrows() if row["support"] > 0 and f1[c] < 0.5}
    assert {w["class"] for w in evaluation.weak_classes} == expected
    predictions = pd.read_parquet(Path(evaluation.dir) / "predictions.parquet")
    assert all(len(p) == len(t) for p, t in zip(predictions["prediction"], predictions["tokens"]))
    worst = pd.read_csv(Path(evaluation.dir) / "worst_errors.csv")
    assert "mistakes" in worst.columns

    answer = OnnxPredictor(exported.dir).predict(["Barack Obama visited Paris on Monday"])[0]
    assert isinstance(answer["entities"], list)


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_ner_labels_first_or_all_subtokens(all_subtokens):
    from tasks.labels import IGNORE_INDEX
    from tasks.modelling.encode import encode_frame, load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path("minilm"))
    df = pd.DataFrame({"tokens": [["Schwarzenegger", "visited", "Tbilisi"]], "tags": [["B-person", "O", "B-geo-loc"]]})
    labels = ["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]
    enc = encode_frame(tokenizer, df, "ner", labels, 32, label_all_subtokens=all_subtokens)
    word_ids = tokenizer(df["tokens"][0], is_split_into_words=True).word_ids()
    assert word_ids.count(0) > 1  # the name splits into several sub-tokens
    got = enc["labels"][0]
    assert got[0] == IGNORE_INDEX and got[-1] == IGNORE_INDEX  # [CLS], [SEP]
    person = [lab for lab, w in zip(got, word_ids) if w == 0]
    expected_rest = 2 if all_subtokens else IGNORE_INDEX  # I-person after B-person: still one entity
    assert person[0] == 1 and all(lab == expected_rest for lab in person[1:])
