"""Multi-label pieces without a model: reading label sets, cleaning them, decoding, metrics, intervals, losses,
per-label calibration and thresholds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.kinds import kind_of
from tasks.kinds.decision import Decision, sigmoid
from tasks.labels import LabelSetError, label_sets_of

KIND = kind_of("multi_label")
LABELS = ["billing", "refund", "shipping"]


def test_label_cells_read_as_lists_json_lists_or_separated_strings():
    column = pd.Series([["b", "a"], '["c"]', "[]", None, np.array(["d"])])
    assert list(label_sets_of(column, None)) == [["b", "a"], ["c"], [], None, ["d"]]
    strings = pd.Series(["a|b", " c | d ", "", "e", None])
    assert list(label_sets_of(strings, "|")) == [["a", "b"], ["c", "d"], [], ["e"], []]  # delimited: empty = none
    assert list(label_sets_of(pd.Series(["a,b"]), None)) == [["a,b"]]  # no separator: one label as written


def test_a_column_mixing_lists_and_plain_strings_is_one_error_naming_both():
    with pytest.raises(LabelSetError) as e:
        label_sets_of(pd.Series(['["a", "b"]', "a|b", '["c"]']), "|", "tickets.csv")
    msg = str(e.value)
    assert "tickets.csv mixes lists and plain strings" in msg and "2 rows hold a list" in msg
    assert "'a|b'" in msg and "label_separator" in msg


def test_a_separated_csv_is_collected_and_cleaned_as_label_sets(tmp_path):
    from tasks.config import load_config
    from tasks.data.clean import clean_frame, resolve_labels
    from tasks.data.collect import collect_data
    from tasks.data.readers import DataSourceError
    from tasks.io import read_frame

    rows = [
        (f"ticket {i} about my order", ["billing|refund", "shipping", "", "Billing | shipping"][i % 4])
        for i in range(80)
    ]
    path = tmp_path / "tickets.csv"
    pd.DataFrame(rows, columns=["text", "labels"]).to_csv(path, index=False)
    overrides = [
        "data.task=multi_label",
        "data.source.kind=file",
        f"data.source.path={path}",
        "data.label_column=labels",
        "data.label_separator='|'",
        "data.labels=[billing, refund, shipping]",
    ]
    cfg = load_config(None, overrides)
    raw = read_frame(collect_data(cfg.data, tmp_path / "run").path)
    assert [list(x) for x in raw["label"][:4]] == [["billing", "refund"], ["shipping"], [], ["Billing", "shipping"]]
    splits, quarantine, _ = clean_frame(raw, cfg.data)
    kept = pd.concat(splits.values())
    # "Billing" becomes the declared spelling; a set is sorted and holds each name once; [] stays an answer.
    assert {json.dumps(list(s)) for s in kept["label"]} == {
        '["billing", "refund"]',
        '["shipping"]',
        "[]",
        '["billing", "shipping"]',
    }
    assert resolve_labels(splits, cfg.data) == LABELS and quarantine.empty
    mixed = tmp_path / "mixed.csv"
    pd.DataFrame({"text": ["a", "b"], "labels": ['["billing"]', "refund"]}).to_csv(mixed, index=False)
    with pytest.raises(DataSourceError, match="mixes lists and plain strings"):
        collect_data(
            load_config(None, [*overrides[:2], f"data.source.path={mixed}", *overrides[3:]]).data, tmp_path / "r2"
        )


def test_unknown_labels_and_missing_cells_are_quarantined_and_conflicts_compare_sets():
    from tasks.config import load_config
    from tasks.data.clean import clean_frame

    cfg = load_config(None, ["data.task=multi_label", "data.labels=[a, b]", "data.splits.test_fraction=0.0"])
    raw = pd.DataFrame(
        {
            "text": ["one", "two", "three", "four", "four", "five", "five"],
            "label": [["a"], ["a", "zzz"], None, ["b", "a"], ["a", "b"], ["a"], ["b"]],
        }
    )
    _, quarantine, report = clean_frame(raw, cfg.data)
    assert report["removed"]["unknown_label"] == 1 and report["removed"]["missing_label"] == 1
    assert report["removed"]["duplicate"] == 1  # {b, a} and {a, b} are one set
    assert report["removed"]["conflicting_labels"] == 2  # "five" with {a} and with {b}
    assert set(quarantine["reason"]) == {"unknown_label", "missing_label", "duplicate", "conflicting_labels"}


def test_decoding_applies_each_labels_scaling_and_threshold():
    logits = [np.array([2.0, -1.0, 0.1], dtype=np.float32), np.array([-3.0, 0.5, -0.2], dtype=np.float32)]
    plain, probs = KIND.decode(logits, LABELS, Decision())
    assert plain.tolist() == [[1, 0, 1], [0, 1, 0]] and np.allclose(probs, sigmoid(np.stack(logits)))
    rule = Decision(scales=(1.0, 2.0, 1.0), biases=(0.0, 0.0, -1.0), thresholds=(0.9, 0.5, 0.3))
    preds, probs = KIND.decode(logits, LABELS, rule)
    expected = sigmoid(np.stack(logits) * np.array([1.0, 2.0, 1.0]) + np.array([0.0, 0.0, -1.0]))
    assert np.allclose(probs, expected, atol=1e-6)
    assert preds.tolist() == (expected >= np.array([0.9, 0.5, 0.3])).astype(int).tolist()
    assert KIND.answers(preds, LABELS) == [[name for name, on in zip(LABELS, row) if on] for row in preds.tolist()]
    meta = {"labels": LABELS, "decision": {"scales": [1, 2, 1], "biases": [0, 0, -1], "thresholds": [0.9, 0.5, 0.3]}}
    assert Decision.of_meta(meta) == rule


def test_metrics_match_sklearn_and_the_bootstrap_brackets_them():
    from sklearn.metrics import f1_score, hamming_loss

    from tasks.modelling.confidence import bootstrap_interval, label_f1_intervals
    from tasks.modelling.metrics import compute_metrics_for

    rng = np.random.default_rng(0)
    refs = (rng.random((300, 3)) < [0.5, 0.2, 0.05]).astype(int)
    preds = np.where(rng.random((300, 3)) < 0.8, refs, 1 - refs)
    m = compute_metrics_for("multi_label", preds, refs, LABELS)
    assert m["f1_micro"] == pytest.approx(f1_score(refs, preds, average="micro"))
    assert m["f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(refs, preds))
    assert m["subset_accuracy"] == pytest.approx((preds == refs).all(axis=1).mean())
    assert (
        m["f1_refund"] == pytest.approx(f1_score(refs[:, 1], preds[:, 1])) and m["support_shipping"] == refs[:, 2].sum()
    )
    for name in ("f1_micro", "f1_macro", "subset_accuracy"):
        low, high = bootstrap_interval("multi_label", name, preds.tolist(), refs.tolist())
        assert low < m[name] < high, name
    intervals = label_f1_intervals(preds.tolist(), refs.tolist())
    assert len(intervals) == 3 and all(low < m[f"f1_{name}"] < high for name, (low, high) in zip(LABELS, intervals))


def test_bce_loss_is_torchs_and_focal_with_gamma_zero_is_the_weighted_bce():
    import torch
    import torch.nn.functional as F

    from tasks.modelling.losses import compute_loss, label_skew, positive_weights

    torch.manual_seed(0)
    logits, targets = torch.randn(8, 3), (torch.rand(8, 3) < 0.3).float()
    w = [1.0, 3.0, 10.0]
    bce = compute_loss("multi_label", "auto", logits, targets, class_weights=w)
    assert torch.allclose(bce, F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(w)))
    focal0 = compute_loss("multi_label", "focal", logits, targets, class_weights=w, gamma=0.0)
    assert torch.allclose(focal0, bce, atol=1e-6)
    focal2 = compute_loss("multi_label", "focal", logits, targets, gamma=2.0)
    assert focal2 < compute_loss("multi_label", "auto", logits, targets)  # easy decisions weigh less
    y = np.array([[1, 0, 0]] * 2 + [[0, 0, 0]] * 198)
    assert positive_weights(y) == [50.0, 1.0, 1.0]  # capped at 50 (99 here); never-positive labels stay neutral
    assert label_skew(y) == pytest.approx(99.0)
    with pytest.raises(ValueError, match="do not match the 0/1 labels"):
        compute_loss("multi_label", "auto", logits, targets[:, :2])


def test_platt_scaling_and_thresholds_are_fitted_per_label_on_validation():
    from tasks.config import DecisionConfig
    from tasks.modelling.calibration import fit_multi_label_decision

    rng = np.random.default_rng(1)
    refs = (rng.random((400, 3)) < [0.4, 0.1, 0.0]).astype(int)  # the third label never occurs here
    # Logits shifted up and stretched (what positive weights do): Platt undoes both.
    logits = (refs * 2.0 - 1.0) * 1.5 + rng.normal(0, 1.5, refs.shape) + 3.0
    record = fit_multi_label_decision(DecisionConfig(), logits, refs, LABELS)
    v = record["validation"]
    assert v["nll_after"] < v["nll_before"] and v["ece_after"] < v["ece_before"]
    assert record["scales"][2] == 1.0 and record["biases"][2] == 0.0 and record["thresholds"][2] == 0.5
    assert [p["label"] for p in record["per_label"]] == LABELS and record["per_label"][0]["f1"] > 0.7
    fixed = fit_multi_label_decision(DecisionConfig(threshold=0.4, calibration="none"), logits, refs, LABELS)
    assert fixed["thresholds"] == [0.4, 0.4, 0.4] and fixed["scales"] == [1.0, 1.0, 1.0]
    strict = fit_multi_label_decision(DecisionConfig(threshold={"min_precision": 0.95}), logits, refs, LABELS)
    assert all(p["precision"] >= 0.95 for p in strict["per_label"][:2] if p["met"])
    with pytest.raises(ValueError, match="chooses every label's best-F1 threshold"):
        fit_multi_label_decision(DecisionConfig(threshold={"max_f1": "refund"}), logits, refs, LABELS)


def test_training_metrics_compare_checkpoints_at_each_labels_best_threshold():
    from transformers import EvalPrediction

    from tasks.modelling.metrics import make_trainer_compute_metrics

    # Label a separates its rows perfectly at logit 4 (a positive weight's shift), label b at -2.
    logits = np.array([[5.0, -1.0], [4.5, -3.0], [3.0, -1.5], [2.0, -4.0]])
    refs = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    m = make_trainer_compute_metrics("multi_label", ["a", "b"])(EvalPrediction(logits, refs))
    assert m["f1_a"] == 1.0 and m["f1_b"] == 1.0 and m["subset_accuracy"] == 1.0
