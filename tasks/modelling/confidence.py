"""Bootstrap confidence intervals for test metrics: how far a score on a small test split can move.

A test split of a few hundred rows (57 spam messages in the SMS spam test split) moves F1 by
several points from one sample of the data to the next; the interval says how much. Rows (NER:
sentences) are resampled with replacement; each example is first reduced to the sums a metric
needs (true positives, predictions, references; for regression the moments of prediction and
truth), so a resample costs one weighted sum, not a metric call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks.kinds import kind_of
from tasks.labels import label_keys

CONFIDENCE = 0.95
RESAMPLES = 1000
POISSON_FROM = 20_000


def _f1(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    denom = n_pred + n_true
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def _class_counts(preds: np.ndarray, refs: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per example and class: is it a true positive, a prediction, a reference (shape n x k)."""
    onehot_p, onehot_r = np.eye(k)[preds], np.eye(k)[refs]
    return {"tp": onehot_p * onehot_r, "pred": onehot_p, "true": onehot_r}


def _classification_stat(metric: str, preds: list[int], refs: list[int], num_labels: int):
    p, r = np.asarray(preds), np.asarray(refs)
    k = max(num_labels, int(max(p.max(), r.max())) + 1)
    counts = _class_counts(p, r, k)
    if metric == "accuracy":
        return np.stack([(p == r).astype(float), np.ones(len(p))], axis=1), lambda s: s[:, 0] / s[:, 1]
    if metric == "f1" and k == 2:  # the positive class's F1
        per_row = np.stack([counts["tp"][:, 1], counts["pred"][:, 1], counts["true"][:, 1]], axis=1)
        return per_row, lambda s: _f1(s[:, 0], s[:, 1], s[:, 2])
    if metric in ("f1", "f1_macro"):  # macro over the classes present in the resample (sklearn's rule)
        per_row = np.concatenate([counts["tp"], counts["pred"], counts["true"]], axis=1)

        def macro(s):
            tp, n_pred, n_true = s[:, :k], s[:, k : 2 * k], s[:, 2 * k :]
            present = (n_pred + n_true) > 0
            return (_f1(tp, n_pred, n_true) * present).sum(1) / np.maximum(present.sum(1), 1)

        return per_row, macro
    raise ValueError(f"no bootstrap interval for classification metric '{metric}'")


def _regression_stat(metric: str, predictions: Sequence[Any], references: Sequence[Any]):
    if metric not in ("pearson", "mse", "rmse", "mae"):
        raise ValueError(f"no bootstrap interval for regression metric '{metric}'")
    p, r = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
    err = p - r
    # Centred for the correlation, so variances from sums of squares lose no precision to a large mean.
    p, r = p - p.mean(), r - r.mean()
    per_row = np.stack([np.ones_like(p), p, r, p * p, r * r, p * r, err**2, np.abs(err)], axis=1)

    def pearson(s):
        n = s[:, 0]
        cov = s[:, 5] / n - s[:, 1] * s[:, 2] / n**2
        var_p, var_r = s[:, 3] / n - (s[:, 1] / n) ** 2, s[:, 4] / n - (s[:, 2] / n) ** 2
        ok = (var_p > 0) & (var_r > 0)
        return np.where(ok, cov / np.sqrt(np.where(ok, var_p * var_r, 1.0)), 0.0)  # constant: 0, as the metric

    pick = {
        "pearson": pearson,
        "mse": lambda s: s[:, 6] / s[:, 0],
        "rmse": lambda s: np.sqrt(s[:, 6] / s[:, 0]),
        "mae": lambda s: s[:, 7] / s[:, 0],
    }
    return per_row, pick[metric]


def _ner_stat(metric: str, preds: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]):
    # heavy (seqeval): loaded when this runs, so importing tasks.modelling.confidence stays light
    from seqeval.metrics.sequence_labeling import get_entities

    if metric not in ("f1", "precision", "recall"):
        raise ValueError(f"no bootstrap interval for NER metric '{metric}'")
    rows = []
    for p, r in zip(preds, refs):
        ents_p, ents_r = set(get_entities(list(p))), set(get_entities(list(r)))
        rows.append((len(ents_p & ents_r), len(ents_p), len(ents_r)))
    per_row = np.asarray(rows, dtype=float)
    pick = {
        "f1": lambda s: _f1(s[:, 0], s[:, 1], s[:, 2]),
        "precision": lambda s: np.where(s[:, 1] > 0, s[:, 0] / np.maximum(s[:, 1], 1), 0.0),
        "recall": lambda s: np.where(s[:, 2] > 0, s[:, 0] / np.maximum(s[:, 2], 1), 0.0),
    }
    return per_row, pick[metric]


def _multi_label_stat(metric: str, preds: Sequence[Any], refs: Sequence[Any]):
    """Per row: per label true positive, predicted, true (3k columns); whether the whole set is right; 1."""
    p, r = np.asarray(preds, dtype=float), np.asarray(refs, dtype=float)
    if p.ndim != 2 or p.shape != r.shape:
        raise ValueError(f"multi-label predictions {p.shape} and references {r.shape} must be [rows, labels]")
    k = p.shape[1]
    right = (p == r).all(axis=1, keepdims=True).astype(float)
    per_row = np.concatenate([p * r, p, r, right, np.ones_like(right)], axis=1)

    def parts(s):
        return s[:, :k], s[:, k : 2 * k], s[:, 2 * k : 3 * k]

    if metric == "f1_micro":
        return per_row, lambda s: _f1(*(x.sum(axis=1) for x in parts(s)))
    if metric == "f1_macro":  # over every label, an absent one counting 0 (sklearn's multi-label macro)
        return per_row, lambda s: _f1(*parts(s)).mean(axis=1)
    if metric == "subset_accuracy":
        return per_row, lambda s: s[:, 3 * k] / s[:, 3 * k + 1]
    if metric == "f1_per_label":  # every label's F1: one column per label
        return per_row, lambda s: _f1(*parts(s))
    raise ValueError(f"no bootstrap interval for multi-label metric '{metric}'")


def label_f1_intervals(
    predictions: Sequence[Any],
    references: Sequence[Any],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Multi-label: every label's F1 interval, in label order, all read off one set of resamples."""
    per_row, stat = _multi_label_stat("f1_per_label", predictions, references)
    scores = _resampled(len(references), lambda w: stat(w @ per_row), resamples, seed)  # [resamples, labels]
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail], axis=0)
    return list(zip(low.astype(float).tolist(), high.astype(float).tolist()))


def bootstrap_interval(
    task: str,
    metric: str,
    predictions: Sequence[Any],
    references: Sequence[Any],
    num_labels: int = 2,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one test metric: (low, high)."""
    per_row, stat = _metric_stat(task, metric, predictions, references, num_labels)
    scores = _resampled(len(references), lambda w: stat(w @ per_row), resamples, seed)
    return _percentiles(scores, confidence)


def paired_difference_interval(
    task: str,
    metric: str,
    predictions_a: Sequence[Any],
    predictions_b: Sequence[Any],
    references: Sequence[Any],
    num_labels: int = 2,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of metric(a) - metric(b), both scored on the same resampled rows.

    Paired: each resample draws rows once and scores both answer sets on them, so the rows' shared
    difficulty cancels and the interval is far narrower than two separate intervals would suggest.
    """
    rows_a, stat = _metric_stat(task, metric, predictions_a, references, num_labels)
    rows_b, _ = _metric_stat(task, metric, predictions_b, references, num_labels)
    scores = _resampled(len(references), lambda w: stat(w @ rows_a) - stat(w @ rows_b), resamples, seed)
    return _percentiles(scores, confidence)


def _metric_stat(task: str, metric: str, predictions: Sequence[Any], references: Sequence[Any], num_labels: int):
    """(per-row sums, the metric of summed rows) for a task kind's metric."""
    kind = kind_of(task)
    if kind.predicts_value:
        return _regression_stat(metric, predictions, references)
    if kind.is_token_level:
        return _ner_stat(metric, predictions, references)
    if kind.is_single_label:
        return _classification_stat(metric, list(predictions), list(references), num_labels)
    if kind.is_multi_label:
        return _multi_label_stat(metric, predictions, references)
    raise kind.unsupported("bootstrap statistics")


def _resampled(n: int, score, resamples: int, seed: int) -> np.ndarray:
    """`score(weights)` for `resamples` bootstrap draws of n rows (weights: how often each row is drawn)."""
    if n < 2:
        raise ValueError("a bootstrap interval needs at least 2 examples")
    rng = np.random.default_rng(seed)
    # A resample's counts are one weighted sum. Chunks bound the memory of the draw matrix
    # (chunk x n); past POISSON_FROM rows the Poisson bootstrap (independent Poisson(1) draws)
    # stands in for the multinomial, which is slow at that size.
    chunk = max(1, min(resamples, 20_000_000 // (8 * n)))

    def draw(size: int) -> np.ndarray:
        if n > POISSON_FROM:
            return rng.poisson(1.0, size=(size, n)).astype(float)
        return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(float)

    return np.concatenate([score(draw(min(chunk, resamples - done))) for done in range(0, resamples, chunk)])


def _percentiles(scores: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(scores, [tail, 100 - tail])
    return float(low), float(high)


def interval_metrics(task: str, scored: dict, labels: list[str] | None) -> dict[str, float]:
    """`<metric>_ci_low` / `<metric>_ci_high` for the kind's interval metrics (its primary, and accuracy for classifiers)."""
    names = kind_of(task).interval_metrics
    out: dict[str, float] = {}
    for name in names:
        low, high = bootstrap_interval(
            task, name, scored["predictions"], scored["references"], num_labels=len(labels or []) or 2
        )
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = low, high
    if kind_of(task).is_multi_label and labels:  # per-label F1 moves most on rare labels: each gets its interval
        intervals = label_f1_intervals(scored["predictions"], scored["references"])
        for key, (low, high) in zip(label_keys(labels), intervals):
            out[f"f1_{key}_ci_low"], out[f"f1_{key}_ci_high"] = low, high
    return out
