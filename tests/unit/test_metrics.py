"""Metric values checked against hand counts, sklearn and scipy."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef, precision_score, recall_score
from transformers import EvalPrediction

from tasks.labels import label_keys
from tasks.modelling.metrics import (
    compute_metrics_for,
    greater_is_better,
    make_trainer_compute_metrics,
    primary_metric,
)
from tests.support import ROOT

NER_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def test_binary_scores_match_hand_counts():
    refs = [1, 1, 1, 1, 0, 0]
    preds = [1, 1, 1, 0, 0, 1]
    m = compute_metrics_for("classification", preds, refs, ["neg", "pos"])
    # class pos: TP 3, FP 1, FN 1; class neg: TP 1, FP 1, FN 1
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_pos"] == pytest.approx(0.75)
    assert m["f1_neg"] == pytest.approx(0.5)
    assert m["precision_pos"] == pytest.approx(0.75)
    assert m["recall_neg"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx(0.625)
    assert m["f1"] == pytest.approx(0.75)  # binary: F1 of label id 1, not macro
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3 - 1) / sqrt(4*4*2*2)
    assert m["mcc"] == pytest.approx(2 / 8)
    assert (m["support_neg"], m["support_pos"]) == (2.0, 4.0)
    assert all(isinstance(v, float) for v in m.values())


def test_multiclass_matches_sklearn_and_f1_is_macro():
    refs = [0, 1, 2, 2, 1, 0, 2, 1]
    preds = [0, 2, 2, 1, 1, 0, 2, 0]
    m = compute_metrics_for("pair_classification", preds, refs, ["entailment", "neutral", "contradiction"])
    assert m["f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert m["precision_macro"] == pytest.approx(precision_score(refs, preds, average="macro"))
    assert m["recall_macro"] == pytest.approx(recall_score(refs, preds, average="macro"))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(refs, preds))
    assert m["f1"] == m["f1_macro"]
    per_class = f1_score(refs, preds, average=None)
    assert [m["f1_entailment"], m["f1_neutral"], m["f1_contradiction"]] == pytest.approx(list(per_class))


def test_label_keys_are_sanitised_and_never_shadow_aggregates():
    keys = label_keys(["very good", "macro", "a/b", "a b", "B-PER"])
    assert keys == ["very_good", "macro_1", "a_b_2", "a_b_3", "B-PER"]
    m = compute_metrics_for("classification", [0, 1, 2], [0, 1, 1], ["very good", "macro", "c"])
    assert "f1_very_good" in m and "f1_macro_1" in m
    assert m["f1_macro"] == pytest.approx(f1_score([0, 1, 1], [0, 1, 2], average="macro"))


def test_declared_class_absent_everywhere_keeps_its_key_but_not_the_macro():
    m = compute_metrics_for("classification", [0, 1, 1], [0, 1, 0], ["a", "b", "c"])
    assert m["f1_c"] == 0.0
    assert m["f1_macro"] == pytest.approx((m["f1_a"] + m["f1_b"]) / 2)


def test_ids_without_names_and_out_of_range_ids():
    m = compute_metrics_for("classification", np.array([0, 1, 1]), np.array([0, 1, 0]), None)
    assert {"f1_0", "f1_1"} <= m.keys()
    with pytest.raises(ValueError, match="outside"):
        compute_metrics_for("classification", [0, 3], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="argmax"):
        compute_metrics_for("classification", np.zeros((2, 3)), [0, 1], ["a", "b", "c"])


def test_regression_matches_scipy():
    refs = [1.0, 2.5, 2.9, 4.2, 0.3]
    preds = [1.1, 2.0, 3.3, 3.9, 0.0]
    m = compute_metrics_for("regression", preds, refs, None)
    assert m["pearson"] == pytest.approx(pearsonr(preds, refs)[0])
    assert m["spearman"] == pytest.approx(spearmanr(preds, refs)[0])
    errors = [p - r for p, r in zip(preds, refs)]
    assert m["mse"] == pytest.approx(sum(e * e for e in errors) / 5)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    assert m["mae"] == pytest.approx(sum(abs(e) for e in errors) / 5)


def test_constant_regression_prediction_has_zero_not_nan_correlation():
    m = compute_metrics_for("regression", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0], None)
    assert m["pearson"] == 0.0 and m["spearman"] == 0.0
    assert m["mse"] == pytest.approx(2 / 3)


def test_ner_entity_scores_by_hand():
    refs = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["O", "O"]]
    m = compute_metrics_for("ner", preds, refs, NER_TAGS)
    # true entities PER, LOC(3-4), ORG; predicted PER, LOC(3-3): only PER matches
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["f1_PER"] == 1.0
    assert m["f1_LOC"] == 0.0 and m["f1_ORG"] == 0.0
    assert m["f1_MISC"] == 0.0  # declared in the tag set, absent from the data
    assert (m["support_PER"], m["support_LOC"], m["support_ORG"], m["support_MISC"]) == (1.0, 1.0, 1.0, 0.0)


def test_ner_uses_conlleval_mode_for_a_leading_inside_tag():
    m = compute_metrics_for("ner", [["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]], None)
    assert m["f1"] == 1.0


def test_ner_sentence_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="sentence 0"):
        compute_metrics_for("ner", [["O"]], [["O", "O"]], None)


def test_trainer_callable_for_classification_takes_argmax():
    logits = np.array([[2.0, -1.0], [0.1, 0.9], [0.3, 0.2]])
    compute = make_trainer_compute_metrics("classification", ["neg", "pos"])
    m = compute(EvalPrediction((logits, None), np.array([0, 1, 1])))
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_trainer_callable_for_regression_squeezes():
    compute = make_trainer_compute_metrics("regression", None)
    m = compute(EvalPrediction(np.array([[1.0], [2.0], [3.5]]), np.array([1.0, 2.0, 3.0])))
    assert m["mae"] == pytest.approx(0.5 / 3)


def test_trainer_callable_for_ner_drops_ignored_positions():
    tags = ["O", "B-PER", "I-PER"]
    # argmax ids per token: [CLS]=0, B-PER, I-PER, sub-token, [SEP]; labels mask CLS/SEP/sub-token
    ids = np.array([[0, 1, 2, 0, 0]])
    logits = np.eye(3)[ids] * 5.0
    labels = np.array([[-100, 1, 2, -100, -100]])
    m = make_trainer_compute_metrics("ner", tags)(EvalPrediction(logits, labels))
    assert m["f1"] == 1.0 and m["accuracy"] == 1.0
    with pytest.raises(ValueError, match="label_names"):
        make_trainer_compute_metrics("ner", None)


def test_primary_metric_and_direction():
    assert primary_metric("classification") == "f1"
    assert primary_metric("pair_classification") == "f1"
    assert primary_metric("regression") == "pearson"
    assert primary_metric("ner") == "f1"
    assert greater_is_better("f1") and greater_is_better("eval_pearson") and greater_is_better("mcc")
    assert not any(greater_is_better(n) for n in ("mse", "eval_rmse", "mae", "loss", "eval_loss"))
    with pytest.raises(ValueError, match="allowed"):
        primary_metric("summarisation")


def test_importing_metrics_does_not_import_evaluate():
    code = "import sys, tasks.modelling.metrics; sys.exit('evaluate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_words_cut_off_by_truncation_are_tagged_outside_wherever_o_is_declared():
    from tasks.inference.decode import word_logits

    token_logits = np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 0.0]])  # [CLS] word0 [SEP]
    words = word_logits(token_logits, [None, 0, None], n_words=3, outside=2)  # labels [B-LOC, I-LOC, O]
    assert words.argmax(-1).tolist() == [1, 2, 2]
