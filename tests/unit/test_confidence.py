"""Bootstrap intervals of test metrics: they bracket the score, shrink with data, match the metric."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.modelling.confidence import bootstrap_interval, interval_metrics
from tasks.modelling.metrics import compute_metrics_for


def noisy_labels(n: int, k: int = 2, right: float = 0.85, seed: int = 0):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < right, refs, rng.integers(0, k, n))
    return preds.tolist(), refs.tolist()


@pytest.mark.parametrize("k,metric", [(2, "f1"), (3, "f1"), (2, "accuracy")])
def test_interval_brackets_the_score_and_narrows_with_more_rows(k, metric):
    widths = []
    for n in (200, 3200):
        preds, refs = noisy_labels(n, k)
        score = compute_metrics_for("classification", preds, refs)[metric]
        low, high = bootstrap_interval("classification", metric, preds, refs, num_labels=k)
        assert low < score < high
        widths.append(high - low)
    # The width falls like 1/sqrt(n): 16x the rows, about a quarter of the width.
    assert 0.15 < widths[1] / widths[0] < 0.4


def test_binary_f1_interval_matches_a_plain_resampling_loop():
    """The count-based shortcut gives what scoring each resample with the metric gives."""
    preds, refs = noisy_labels(300, seed=3)
    p, r = np.array(preds), np.array(refs)
    rng = np.random.default_rng(7)
    slow = []
    for _ in range(400):
        i = rng.integers(0, len(r), len(r))
        slow.append(compute_metrics_for("classification", p[i], r[i])["f1"])
    low, high = bootstrap_interval("classification", "f1", preds, refs)
    assert abs(low - np.percentile(slow, 2.5)) < 0.015 and abs(high - np.percentile(slow, 97.5)) < 0.015


def test_regression_and_ner_intervals():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    low, high = bootstrap_interval("regression", "pearson", y, x)
    assert low < float(np.corrcoef(x, y)[0, 1]) < high < 1.0
    biased = y + 2.0  # errors are about the raw difference, bias included
    for metric, value in (("rmse", np.sqrt(((biased - x) ** 2).mean())), ("mae", np.abs(biased - x).mean())):
        low, high = bootstrap_interval("regression", metric, biased, x)
        assert low < value < high
    refs = [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["B-ORG", "O", "B-PER"]] * 40
    preds = [["B-PER", "I-PER", "O"], ["O", "O"], ["B-ORG", "O", "B-LOC"]] * 40
    f1 = compute_metrics_for("ner", preds, refs)["f1"]
    low, high = bootstrap_interval("ner", "f1", preds, refs)
    assert low < f1 < high


def test_intervals_are_reproducible_and_named_per_metric():
    preds, refs = noisy_labels(500)
    scored = {"predictions": preds, "references": refs}
    first = interval_metrics("classification", scored, ["neg", "pos"])
    assert first == interval_metrics("classification", scored, ["neg", "pos"])
    assert set(first) == {"f1_ci_low", "f1_ci_high", "accuracy_ci_low", "accuracy_ci_high"}


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="no bootstrap interval"):
        bootstrap_interval("classification", "mcc", [0, 1], [0, 1])
