"""Calibration and decision thresholds: the maths against independent references (a brute-force grid,
a hand computation, a brute-force threshold scan). The small real pipeline whose bundle carries the
temperature and threshold is in tests/integration/test_calibrated_bundle.py.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tasks.inference.decode import Decision, decode_logits, softmax
from tasks.modelling.calibration import (
    choose_threshold,
    ece_floor,
    expected_calibration_error,
    fit_decision,
    fit_temperature,
    negative_log_likelihood,
)


def overconfident_set(n: int = 4000, k: int = 3, sharpen: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z), but the model reports z * sharpen: over-confident by a known factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, k))
    p = softmax(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return z * sharpen, labels


def test_fitted_temperature_is_the_nll_minimum_of_a_brute_force_grid():
    logits, labels = overconfident_set()
    t = fit_temperature(logits, labels)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 4001))
    nll = [negative_log_likelihood(logits, labels, g) for g in grid]
    best = grid[int(np.argmin(nll))]
    assert abs(t - best) / best < 2e-3
    assert negative_log_likelihood(logits, labels, t) <= min(nll) + 1e-7
    assert 2.6 < t < 3.4  # the sharpening factor the data were made with
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits / t), labels)
    assert after < before / 2, (before, after)


def test_ece_against_a_hand_computation():
    # Top probabilities 0.95, 0.95, 0.6, 0.55, 0.52; correctness 1, 0, 1, 0, 1. Bins of width 1/15:
    # (14/15, 1] holds both 0.95s, (8/15, 9/15] holds 0.6 and 0.55, (7/15, 8/15] holds 0.52.
    probs = np.array([[0.95, 0.05], [0.05, 0.95], [0.6, 0.4], [0.45, 0.55], [0.52, 0.48]])
    labels = np.array([0, 0, 0, 0, 0])
    hand = (2 / 5) * abs(0.5 - 0.95) + (2 / 5) * abs(0.5 - (0.6 + 0.55) / 2) + (1 / 5) * abs(1.0 - 0.52)
    assert expected_calibration_error(probs, labels) == pytest.approx(hand, abs=1e-12)
    # A confidence of exactly k/15 belongs to the bin that ends there.
    edge = np.array([[8 / 15, 7 / 15], [0.6, 0.4]])
    assert expected_calibration_error(edge, np.array([0, 1])) == pytest.approx(0.5 * (1 - 8 / 15) + 0.5 * 0.6)


def test_ece_floor_is_what_a_calibrated_model_shows_on_that_many_rows():
    rng = np.random.default_rng(1)
    confident = np.column_stack([c := rng.uniform(0.9, 1.0, 500), 1 - c])
    floor = ece_floor(confident)
    # Independent reference: labels drawn from the probabilities themselves, ECE measured the plain way.
    seen = [expected_calibration_error(confident, (rng.random(500) >= confident[:, 0]).astype(int)) for _ in range(400)]
    assert floor == pytest.approx(np.mean(seen), rel=0.1)
    assert 0.005 < floor < 0.05  # far from zero on 500 rows: halving an ECE near it is not possible
    assert ece_floor(np.repeat(confident, 40, axis=0)) < floor / 4  # it shrinks as rows grow (~1/sqrt(n))
    assert ece_floor(np.array([[1.0, 0.0]] * 10)) == 0.0 and ece_floor(np.zeros((0, 2))) == 0.0


def scan(scores, positive, thresholds):
    """Precision, recall, F1 of `score >= t` for each t, the plain way."""
    out = []
    for t in thresholds:
        pred = scores >= t
        tp = int((pred & positive).sum())
        p = tp / pred.sum() if pred.sum() else 0.0
        r = tp / positive.sum()
        out.append((t, p, r, 2 * p * r / (p + r) if tp else 0.0))
    return out


@pytest.fixture
def noisy_scores():
    rng = np.random.default_rng(1)
    positive = rng.random(600) < 0.2
    scores = np.clip(np.where(positive, rng.normal(0.7, 0.2, 600), rng.normal(0.3, 0.2, 600)), 0, 1).round(3)
    return scores, positive  # rounded: ties occur, as they do with real probabilities


def test_max_f1_threshold_matches_a_brute_force_scan(noisy_scores):
    scores, positive = noisy_scores
    choice = choose_threshold(scores, positive, {"max_f1": "spam"})
    grid = scan(scores, positive, np.unique(np.r_[scores, np.linspace(0, 1, 1001)]))
    best = max(f for _, _, _, f in grid)
    assert choice.f1 == pytest.approx(best, abs=1e-12)
    _, p, r, f = scan(scores, positive, [choice.threshold])[0]
    assert (p, r, f) == pytest.approx((choice.precision, choice.recall, choice.f1))


def test_min_precision_threshold_matches_a_brute_force_scan(noisy_scores):
    scores, positive = noisy_scores
    for goal in (0.8, 0.9, 0.95):
        choice = choose_threshold(scores, positive, {"min_precision": goal, "label": "spam"})
        grid = scan(scores, positive, np.unique(np.r_[scores, np.linspace(0, 1, 1001)]))
        best_recall = max(r for _, p, r, _ in grid if p >= goal)
        assert choice.met and choice.precision >= goal
        assert choice.recall == pytest.approx(best_recall, abs=1e-12)


def test_unreachable_precision_warns_with_what_was_achieved(noisy_scores, caplog):
    scores, positive = noisy_scores
    scores = np.where(positive, np.minimum(scores, 0.9), 1.0)  # every negative outranks every positive
    with caplog.at_level(logging.WARNING, logger="tasks.modelling.calibration"):
        choice = choose_threshold(scores, positive, {"min_precision": 0.999, "label": "spam"})
    assert not choice.met
    grid = scan(scores, positive, np.unique(scores))
    assert choice.precision == pytest.approx(max(p for _, p, _, _ in grid))
    assert "no threshold reaches precision 0.9990 of 'spam'" in caplog.text and "recall" in caplog.text


def test_decision_rule_in_the_core_divides_by_t_and_applies_the_threshold():
    logits = [np.array([2.0, 0.0]), np.array([0.0, 0.5]), np.array([1.0, 0.8])]
    plain = decode_logits("classification", logits, ["ham", "spam"])
    rule = Decision(temperature=2.0, threshold=0.45, positive=1)
    scored = decode_logits("classification", logits, ["ham", "spam"], rule)
    np.testing.assert_allclose(scored.probabilities, softmax(np.stack(logits) / 2.0), atol=1e-7)
    assert plain.predictions.tolist() == [0, 1, 0]
    # spam probabilities at T=2: 0.269, 0.562, 0.475 -> spam from 0.45 on
    assert scored.predictions.tolist() == [0, 1, 1]
    assert scored.confidence()[2] == pytest.approx(scored.probabilities[2, 1])  # the chosen label's probability
    meta = {"labels": ["ham", "spam"], "decision": {"temperature": 2.0, "threshold": 0.45, "positive_label": "spam"}}
    assert Decision.of_meta(meta) == rule and Decision.of_meta({"labels": ["a", "b"]}) == Decision()


def test_decision_config_errors_name_the_field_and_the_fix():
    from tasks.config import ConfigError, DecisionConfig, load_config

    with pytest.raises(ConfigError, match="decision.threshold applies to binary classifiers"):
        load_config(None, ["data.task=regression", "decision.threshold=0.5"])
    with pytest.raises(ConfigError, match=r"decision.threshold = \{...\}: give a number between 0 and 1, \{max_f1"):
        load_config(None, ["decision.threshold={max_f: spam}"])
    with pytest.raises(ConfigError, match="threshold {min_precision: P} needs the positive label: add label: LABEL"):
        load_config(None, ["decision.threshold={min_precision: 0.99}"])
    # A multi-label model reads it as every label's target.
    assert load_config(None, ["data.task=multi_label", "decision.threshold={min_precision: 0.99}"])
    logits, refs = overconfident_set(200, 3)
    with pytest.raises(ValueError, match="needs a binary classifier; this one has 3 labels"):
        fit_decision(DecisionConfig(threshold={"max_f1": "a"}), logits, refs, ["a", "b", "c"])
    with pytest.raises(ValueError, match="names label 'spam', which the model does not have"):
        fit_decision(DecisionConfig(threshold={"max_f1": "spam"}), logits[:, :2], refs % 2, ["ham", "junk"])
    fixed = fit_decision(DecisionConfig(threshold=0.3, calibration="none"), logits[:, :2], refs % 2, ["ham", "spam"])
    assert fixed["temperature"] == 1.0 and fixed["threshold"] == 0.3 and fixed["positive_label"] == "spam"
