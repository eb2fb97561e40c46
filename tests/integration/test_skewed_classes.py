"""Skewed classes: balanced weights when the classes are skewed, and the weak-class report."""

from __future__ import annotations

import pytest
from sklearn.metrics import f1_score

from tasks.config import load_config
from tasks.modelling.evaluate import describe_weak_classes, find_weak_classes, weak_classes_markdown
from tasks.modelling.metrics import compute_metrics_for
from tasks.modelling.trainer import resolve_class_weights

LABELS = ["business", "sports", "tech", "rare"]


def scored_from(refs: list[int], preds: list[int]) -> dict:
    return {
        "references": refs,
        "predictions": preds,
        "metrics": compute_metrics_for("classification", preds, refs, LABELS),
    }


def test_weak_classes_are_those_below_half_f1_or_never_predicted_checked_against_sklearn():
    refs = [0] * 60 + [1] * 50 + [2] * 20 + [3] * 5
    preds = list(refs)
    preds[110:124] = [0] * 14  # tech mostly missed: F1 below 0.5
    preds[130:135] = [1] * 5  # rare never predicted
    preds[:3] = [1, 1, 1]  # a few business rows called sports: still above 0.5
    weak = find_weak_classes(scored_from(refs, preds), "classification", LABELS)
    f1 = f1_score(refs, preds, average=None, labels=range(4), zero_division=0)
    assert [w["class"] for w in weak] == ["rare", "tech"]  # weakest first
    assert weak[0] == {"class": "rare", "f1": 0.0, "support": 5, "predicted": 0, "never_predicted": True}
    assert weak[1]["f1"] == pytest.approx(f1[2]) and f1[2] < 0.5 and weak[1]["predicted"] == 6
    assert all(f1[i] >= 0.5 for i in (0, 1))
    text = describe_weak_classes(weak, len(LABELS))
    assert text.startswith("2 of 4 classes are weak") and "'rare' is never predicted (5 test rows)" in text
    assert "'tech' has F1 0.46 (20 test rows, predicted 6 times)" in text
    assert "| rare | 0.00 | 5 | never |" in weak_classes_markdown(weak, text)


def test_no_weak_class_says_so():
    refs = [0, 1, 2, 3] * 5
    assert find_weak_classes(scored_from(refs, refs), "classification", LABELS) == []
    assert "None" in weak_classes_markdown([], "")


@pytest.mark.parametrize("counts, balanced", [((50, 10), True), ((49, 10), False), ((30, 0), True)])
def test_class_weights_auto_balances_when_the_largest_class_is_5x_the_smallest(counts, balanced):
    cfg = load_config(None, ["data.labels=[a, b]"])
    assert cfg.training.class_weights == "auto"
    ids = [0] * counts[0] + [1] * counts[1]
    weights = resolve_class_weights(cfg, ids, 2)
    if balanced:
        n = sum(counts)
        assert weights[0] == pytest.approx(n / (2 * counts[0]))  # sklearn's n / (k * count)
    else:
        assert weights is None


def test_class_weights_auto_leaves_ner_regression_and_focal_alpha_alone():
    ner = load_config(None, ["data.task=ner"])
    assert resolve_class_weights(ner, [0] * 100 + [1], 2) is None  # "O" outnumbers entities by design
    focal = load_config(None, ["training.loss=focal", "training.focal_alpha=[0.2, 0.8]"])
    assert resolve_class_weights(focal, [0] * 100 + [1], 2) is None
    assert load_config(None, ["data.task=regression", "training.loss=mse"]).training.class_weights == "auto"


def test_a_briefly_trained_model_on_skewed_questions_names_its_weak_classes(tmp_path):
    """Real weights, real TREC data: a few steps leave rare classes unpredicted, and every report says so."""
    import json
    from pathlib import Path

    import pandas as pd

    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.train import train_model
    from tests.support import prepare, small_config

    cfg = small_config(
        tmp_path,
        "data.source.name=trec_coarse",
        "data.labels=[ABBR, DESC, ENTY, HUM, LOC, NUM]",
        "data.max_rows=400",
        "training.max_steps=4",
    )
    clean_ref = prepare(cfg, tmp_path / "run")
    trained = train_model(clean_ref, cfg, tmp_path / "run")
    evaluation = evaluate_model(trained.model_dir, clean_ref, cfg, tmp_path / "run", "test")
    weak = evaluation.weak_classes
    report = pd.read_csv(Path(evaluation.dir) / "per_class_report.csv").set_index("class")
    predicted = pd.read_parquet(Path(evaluation.dir) / "predictions.parquet")["prediction"].value_counts()
    expected = {
        c for c, row in report.iterrows() if row["support"] > 0 and (row["f1"] < 0.5 or predicted.get(c, 0) == 0)
    }
    assert expected and {w["class"] for w in weak} == expected  # 4 steps cannot learn 6 classes
    assert json.loads(Path(evaluation.files["weak_classes"]).read_text()) == weak
    card = Path(evaluation.files["model_card"]).read_text()
    assert evaluation.weak_classes_text in card and f"'{weak[0]['class']}'" in card
