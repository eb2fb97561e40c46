"""Calibration and decision thresholds, fitted on the validation split after training.

- Temperature scaling (Guo et al., 2017): one scalar T > 0 divides the logits; T is the minimiser of
  the validation negative log-likelihood. It changes no argmax, only how sure the answers say they are.
- Expected calibration error: 15 equal-width confidence bins, ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|,
  where confidence is the top probability and accuracy that of the argmax. Beside it, its floor: what a
  perfectly calibrated model with the same confidences shows on as many rows (sampling alone).
- Thresholds for binary classifiers: a number as given, or chosen on validation for a target
  ({max_f1: LABEL} or {min_precision: P, label: LABEL}); the positive class is answered when its
  calibrated probability is at or above the threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.inference.decode import softmax
from tasks.io import save_figure
from tasks.kinds.decision import sigmoid

log = logging.getLogger(__name__)

ECE_BINS = 15
# log T is searched in [log 0.05, log 20]: beyond, a model is degenerate rather than mis-calibrated.
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean NLL of the true class under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of `labels` (class ids) under softmax(logits / T)."""
    # heavy (scipy): loaded when this runs, so importing tasks.modelling.calibration stays light
    from scipy.optimize import minimize_scalar

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    # NLL is smooth and unimodal in log T; a bounded scalar search needs no gradient or start point.
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(found.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin ((k-1)/M, k/M]: rows, mean confidence and accuracy of the argmax."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    # ceil(conf * M) - 1 puts a confidence of exactly k/M into bin k-1, as the right-closed bins say.
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, confidence, n_bins) / count
        acc = np.bincount(which, correct.astype(float), n_bins) / count
    return {"count": count, "confidence": conf, "accuracy": acc}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over n_bins equal-width bins of the top probability (0 for no rows)."""
    bins = reliability_bins(probs, labels, n_bins)
    n = bins["count"].sum()
    if n == 0:
        return 0.0
    used = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float((bins["count"][used] / n * gaps).sum())


def ece_floor(probs: np.ndarray, n_bins: int = ECE_BINS, draws: int = 500, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these confidences would show on this many rows.

    Each draw makes every answer right with exactly its confidence; the mean ECE over the draws is
    what sampling alone gives. An ECE near it cannot be lowered by any calibration: on a few hundred
    rows of a confident model it is well above zero.
    """
    confidence = np.asarray(probs, dtype=np.float64).max(axis=1)
    n = len(confidence)
    if n == 0:
        return 0.0
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    expected = np.bincount(which, confidence, n_bins)  # per bin: count x mean confidence
    right = np.random.default_rng(seed).random((draws, n)) < confidence
    # Per draw and bin: |rights - count x confidence| = count x |accuracy - confidence|.
    rights = np.stack([np.bincount(which, r.astype(float), n_bins) for r in right])
    return float((np.abs(rights - expected).sum(axis=1) / n).mean())


def plot_reliability_diagram(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_bins: int = ECE_BINS
) -> str:
    """One panel per curve name (e.g. before / after): accuracy per confidence bin against the diagonal."""
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.calibration stays light
    import matplotlib

    matplotlib.use("Agg")
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.calibration stays light
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), dpi=120, squeeze=False)
    edges = np.linspace(0, 1, n_bins + 1)
    for ax, (name, (probs, labels)) in zip(axes[0], curves.items()):
        bins = reliability_bins(probs, labels, n_bins)
        used = bins["count"] > 0
        ax.bar(
            edges[:-1][used],
            bins["accuracy"][used],
            width=1 / n_bins,
            align="edge",
            edgecolor="black",
            color="tab:blue",
            label="accuracy",
        )
        ax.bar(
            edges[:-1][used],
            (bins["confidence"] - bins["accuracy"])[used],
            bottom=bins["accuracy"][used],
            width=1 / n_bins,
            align="edge",
            color="tab:red",
            alpha=0.3,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{name}: ECE {expected_calibration_error(probs, labels, n_bins):.4f}",
        )
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return str(path)


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on the positive class's probability and what it achieved on the rows it was chosen on."""

    threshold: float
    precision: float
    recall: float
    f1: float
    met: bool  # whether the target was reached (always True for max_f1 and a given number)


def operating_points(scores: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """Every distinct threshold (a score that occurs), with precision, recall and F1 of `score >= threshold`."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each run of equal scores
    tp = np.cumsum(y)[last].astype(float)
    fp = (last + 1) - tp
    total = max(int(positive.sum()), 1)
    precision, recall = tp / (tp + fp), tp / total
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"threshold": s[last], "precision": precision, "recall": recall, "f1": f1}


def choose_threshold(scores: np.ndarray, positive: np.ndarray, target: dict) -> ThresholdChoice:
    """The threshold for {max_f1: LABEL} or {min_precision: P, label: LABEL} on these rows.

    scores: the positive class's probability per row; positive: whether each row is truly positive.
    max_f1 takes the best F1; min_precision the most recall among thresholds with precision >= P,
    and when none reaches P, the most precise threshold, with a warning saying what it achieved.
    """
    pts = operating_points(scores, positive)
    if not len(pts["threshold"]):
        raise ValueError(
            "cannot choose a threshold on an empty validation split; give data.splits."
            "validation_fraction > 0 or a fixed decision.threshold"
        )
    if "max_f1" in target:
        i, met = int(np.argmax(pts["f1"])), True
    else:
        goal = float(target["min_precision"])
        ok = np.flatnonzero(pts["precision"] >= goal)
        met = bool(len(ok))
        # Recall grows as the threshold falls: the last qualifying point has the most.
        i = int(ok[-1]) if met else int(np.lexsort((pts["recall"], pts["precision"]))[-1])
        if not met:
            log.warning(
                "decision.threshold: no threshold reaches precision %.4f of '%s' on validation; the most "
                "precise one (%.4f) reaches precision %.4f at recall %.4f. Lower min_precision or give "
                "more validation rows.",
                goal,
                target["label"],
                pts["threshold"][i],
                pts["precision"][i],
                pts["recall"][i],
            )
    return ThresholdChoice(
        float(pts["threshold"][i]), float(pts["precision"][i]), float(pts["recall"][i]), float(pts["f1"][i]), met
    )


def measure_threshold(scores: np.ndarray, positive: np.ndarray, threshold: float) -> ThresholdChoice:
    """Precision, recall and F1 of `score >= threshold` (a threshold given as a number)."""
    pred, positive = np.asarray(scores) >= threshold, np.asarray(positive, dtype=bool)
    tp = float((pred & positive).sum())
    precision = tp / pred.sum() if pred.any() else 0.0
    recall = tp / positive.sum() if positive.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return ThresholdChoice(float(threshold), precision, recall, f1, True)


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), in the core's float32 arithmetic."""
    return softmax(np.asarray(logits, dtype=np.float32) / np.float32(temperature))


def fit_decision(cfg, logits: np.ndarray, refs: np.ndarray, labels: list[str]) -> dict:
    """The decision record (finetune_flow.json's "decision") fitted on validation logits and class ids.

    cfg: the pipeline's DecisionConfig. The record holds the temperature, the threshold with its
    positive label and rule, and what both achieved on validation.
    """
    logits, refs = np.asarray(logits, dtype=np.float64), np.asarray(refs, dtype=np.int64)
    temperature = fit_temperature(logits, refs) if cfg.calibration == "temperature" else 1.0
    before, after = calibrated_probabilities(logits, 1.0), calibrated_probabilities(logits, temperature)
    fitted = {
        "rows": len(refs),
        "ece_before": expected_calibration_error(before, refs),
        "ece_after": expected_calibration_error(after, refs),
        "nll_before": negative_log_likelihood(logits, refs),
        "nll_after": negative_log_likelihood(logits, refs, temperature),
    }
    record = {
        "calibration": cfg.calibration,
        "temperature": temperature,
        "threshold": None,
        "positive_label": None,
        "rule": None,
        "validation": fitted,
    }
    if cfg.threshold is None:
        return record
    rule = cfg.threshold if isinstance(cfg.threshold, float) else cfg.threshold.model_dump()
    positive_label = labels[1] if isinstance(rule, float) else rule.get("max_f1", rule.get("label"))
    if len(labels) != 2:
        raise ValueError(
            f"decision.threshold needs a binary classifier; this one has {len(labels)} labels "
            f"({labels}). Set decision.threshold to null."
        )
    if positive_label not in labels:
        raise ValueError(
            f"decision.threshold names label '{positive_label}', which the model does not have; its labels are {labels}"
        )
    pos = labels.index(positive_label)
    scores, positive = after[:, pos], refs == pos
    choice = (
        measure_threshold(scores, positive, rule)
        if isinstance(rule, float)
        else choose_threshold(scores, positive, rule)
    )
    fitted.update(precision=choice.precision, recall=choice.recall, f1=choice.f1, target_met=choice.met)
    record.update(threshold=choice.threshold, positive_label=positive_label, rule=rule)
    return record


# --- multi-label: every label is its own binary decision -------------------------------------------------


def binary_view(logits: np.ndarray, refs: np.ndarray, scales=None, biases=None) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label logits [N, L] and 0/1 refs as N x L binary rows: logits [0, a_j z + b_j], class id y.

    sigmoid(z) = softmax([0, z])[1], so every softmax measure above (NLL, ECE, reliability) reads
    each label decision as a two-class answer.
    """
    z = np.asarray(logits, dtype=np.float64)
    if scales is not None and biases is not None:
        z = z * np.asarray(scales, dtype=np.float64) + np.asarray(biases, dtype=np.float64)
    pairs = np.stack([np.zeros_like(z), z], axis=-1).reshape(-1, 2)
    return pairs, np.asarray(refs, dtype=np.int64).reshape(-1)


def fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling of one label: (a, b) minimising the log loss of sigmoid(a z + b) on these rows.

    Platt's smoothed targets ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)) keep a few validation rows from
    pushing the probabilities to 0 or 1. A label without positives or negatives here keeps (1, 0).
    """
    # heavy (scipy): loaded when this runs, so importing tasks.modelling.calibration stays light
    from scipy.optimize import minimize

    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return 1.0, 0.0
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        s = ab[0] * z + ab[1]
        # log(1 + e^s) - t s, stable for large |s|; its gradient is (sigmoid(s) - t) times (z, 1).
        value = np.logaddexp(0.0, s) - t * s
        g = 1.0 / (1.0 + np.exp(-s)) - t
        return float(value.mean()), np.array([float((g * z).mean()), float(g.mean())])

    found = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-3, 100.0), (-50.0, 50.0)])
    return float(found.x[0]), float(found.x[1])


def label_thresholds(cfg, probs: np.ndarray, refs: np.ndarray, labels: list[str]) -> tuple[list[float], list[dict]]:
    """Per label: the threshold of decision.threshold on validation, and what it achieved.

    null: each label's best F1 (a label with no positive validation row keeps 0.5); a number: that
    value for every label; {min_precision: P}: each label's most recall at precision >= P (only the
    named label with `label`, the others their best F1).
    """
    rule = cfg.threshold
    if rule is not None and not isinstance(rule, float) and "max_f1" in rule.model_dump():
        raise ValueError(
            "decision.threshold {max_f1: LABEL} picks one positive label of a binary classifier; a multi-label "
            "model chooses every label's best-F1 threshold with decision.threshold null"
        )
    if rule is not None and not isinstance(rule, float) and rule.label is not None and rule.label not in labels:
        raise ValueError(
            f"decision.threshold names label '{rule.label}', which the model does not have; its labels are {labels}"
        )
    thresholds, achieved = [], []
    for j, name in enumerate(labels):
        scores, positive = probs[:, j], refs[:, j].astype(bool)
        if isinstance(rule, float):
            choice = measure_threshold(scores, positive, rule)
        elif not positive.any():
            choice = measure_threshold(scores, positive, 0.5)
        elif rule is not None and rule.label in (None, name):
            choice = choose_threshold(scores, positive, {"min_precision": rule.min_precision, "label": name})
        else:
            choice = choose_threshold(scores, positive, {"max_f1": name})
        thresholds.append(choice.threshold)
        achieved.append(
            {"label": name, "precision": choice.precision, "recall": choice.recall, "f1": choice.f1, "met": choice.met}
        )
    return thresholds, achieved


def fit_multi_label_decision(cfg, logits: np.ndarray, refs: np.ndarray, labels: list[str]) -> dict:
    """The decision record of a multi-label model: per-label Platt scaling and thresholds fitted on validation.

    decision.calibration "temperature" means, for label sets, a scale and a bias per label: the positive
    weights of training shift a rare label's logits, which a temperature alone cannot undo.
    """
    logits, refs = np.asarray(logits, dtype=np.float64), np.asarray(refs, dtype=np.int64)
    k = len(labels)
    fitted = [fit_platt(logits[:, j], refs[:, j]) for j in range(k)] if cfg.calibration == "temperature" else []
    scales = [a for a, _ in fitted] or [1.0] * k
    biases = [b for _, b in fitted] or [0.0] * k
    before, after = binary_view(logits, refs), binary_view(logits, refs, scales, biases)
    probs = sigmoid((logits * np.asarray(scales) + np.asarray(biases)).astype(np.float32))
    thresholds, achieved = label_thresholds(cfg, probs, refs, labels)
    rule = cfg.threshold if cfg.threshold is None or isinstance(cfg.threshold, float) else cfg.threshold.model_dump()
    return {
        "calibration": cfg.calibration,
        "temperature": 1.0,
        "scales": scales,
        "biases": biases,
        "threshold": None,
        "thresholds": thresholds,
        "positive_label": None,
        "rule": rule,
        "per_label": achieved,
        "validation": {
            "rows": len(refs),
            "ece_before": expected_calibration_error(calibrated_probabilities(before[0], 1.0), before[1]),
            "ece_after": expected_calibration_error(calibrated_probabilities(after[0], 1.0), after[1]),
            "nll_before": negative_log_likelihood(*before),
            "nll_after": negative_log_likelihood(*after),
        },
    }
