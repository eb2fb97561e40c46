"""Evaluation metrics per task kind, computed through the `evaluate` API with our own modules.

Hub metric scripts cannot be loaded offline, so our modules live in `tasks.modelling.metric_modules`;
that import (evaluate -> transformers, ~5 s) happens on first use, keeping this module cheap.

Keys returned by `compute_metrics_for` (all plain floats):

- classification, pair_classification:
  `accuracy`, `precision_macro`, `recall_macro`, `f1_macro`, `mcc`,
  `precision_<label>`, `recall_<label>`, `f1_<label>`, `support_<label>` (count in the
  references) for every declared label, and
  `f1`: the F1 of class id 1 (the positive class) when there are two labels, else `f1_macro`.
  Macro averages run over the classes present in references or predictions (sklearn's
  default); a declared class that is absent from both reports 0 in its own keys.
  `<label>` comes from `tasks.labels.label_keys(label_names)`: the name with characters outside
  [A-Za-z0-9_.-] replaced by `_` (the class id when no names are given).
- multi_label: `f1_micro`, `f1_macro`, `f1_samples` (and their precision_/recall_), `subset_accuracy`
  (the whole label set right), `hamming_loss` (the share of wrong label decisions), and per label
  `precision_<label>`, `recall_<label>`, `f1_<label>`, `support_<label>` (rows carrying it).
- regression: `pearson`, `spearman`, `mse`, `rmse`, `mae`. A constant prediction or
  reference has no defined correlation: pearson and spearman are then 0.0, not NaN.
- ner: entity-level micro `precision`, `recall`, `f1` from seqeval in its default
  (conlleval-compatible) mode: an I- tag without a preceding B- still opens an entity, as
  conlleval and the hub's seqeval metric count it. `precision_<TYPE>`, `recall_<TYPE>`, `f1_<TYPE>`
  and `support_<TYPE>` (true entities) per entity type (every type in the tag set when label_names is given, plus any
  that occur), and `accuracy`: the token-level accuracy over all scored tokens, `O` included.

Primary metric (the default `metric_for_best_model`): each kind's `primary_metric` (tasks.kinds):
`f1` for classification, pair_classification and ner, `f1_micro` for multi_label, `pearson` for regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tasks.kinds import kind_of
from tasks.labels import IGNORE_INDEX
from tasks.quiet import prints_to_stdout

# Predictions and references: lists, or the Trainer's arrays (class ids, values, tag lists).
Values = Sequence[Any] | np.ndarray

_LOWER_IS_BETTER = {"loss", "mse", "rmse", "mae", "hamming_loss"}
_SPLIT_PREFIXES = ("eval_", "test_", "validation_", "val_", "train_")


def primary_metric(task: str) -> str:
    """The metric that selects the best checkpoint and gates promotion for a task kind."""
    return kind_of(task).primary_metric


def greater_is_better(metric_name: str) -> bool:
    """False for errors and losses (loss, mse, rmse, mae), True for every score."""
    name = metric_name
    for prefix in _SPLIT_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return not (name in _LOWER_IS_BETTER or name.endswith("_loss"))


def compute_metrics_for(
    task: str,
    predictions: Values,
    references: Values,
    label_names: list[str] | None = None,
) -> dict[str, float]:
    """Score predictions against references for a task kind; see the module docstring for the keys."""
    kind = kind_of(task)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(references) == 0:
        raise ValueError("no examples to score")
    # heavy (datasets, evaluate via tasks.modelling.metric_modules): loaded when this runs, so importing tasks.modelling.metrics stays light
    from tasks.modelling.metric_modules import build_metric

    metric = build_metric(kind)
    with prints_to_stdout():  # evaluate's fingerprinting prints bytecode into a Prefect run log otherwise
        return _compute(metric, kind, predictions, references, label_names)


def _compute(metric, kind, predictions: Values, references: Values, label_names: list[str] | None):
    if kind.predicts_value:
        return metric.compute(predictions=_to_floats(predictions), references=_to_floats(references))
    if kind.is_token_level:
        preds, refs = _to_tag_lists(predictions, references)
        return metric.compute(predictions=preds, references=refs, label_names=label_names)
    if kind.is_single_label:
        return metric.compute(
            predictions=_to_ints(predictions), references=_to_ints(references), label_names=label_names
        )
    if kind.is_multi_label:
        return metric.compute(
            predictions=np.asarray(predictions, dtype=np.int64).tolist(),
            references=np.asarray(references, dtype=np.int64).tolist(),
            label_names=label_names,
        )
    raise kind.unsupported("metrics")


def make_trainer_compute_metrics(task: str, label_names: list[str] | None = None) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` callable for the HF Trainer: logits and label ids in, metric dict out.

    Multi-label checkpoints are compared as they will answer: each label at its best-F1 threshold on the
    evaluated rows (the thresholds evaluation then fits on validation). A fixed cut would favour whichever
    checkpoint the loss's positive weights happen to shift onto it.
    """
    kind = kind_of(task)
    if kind.is_token_level and not label_names:
        raise ValueError("NER metrics need label_names (the tag set in id order) to turn ids into tags")

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, label_ids = _unpack_eval_prediction(eval_pred)
        if kind.predicts_value:
            return compute_metrics_for(task, logits, label_ids)
        if kind.is_token_level:
            assert label_names is not None, "refused above: NER metrics need label_names"
            preds, refs = decode_tag_ids(logits.argmax(axis=-1), label_ids, label_names)
            return compute_metrics_for(task, preds, refs, label_names)
        if kind.is_single_label:
            return compute_metrics_for(task, logits.argmax(axis=-1), label_ids.reshape(-1), label_names)
        if kind.is_multi_label:
            sets = label_ids.astype(np.int64)
            return compute_metrics_for(task, (logits >= best_f1_cuts(logits, sets)).astype(np.int64), sets, label_names)
        raise kind.unsupported("Trainer metrics")

    return compute_metrics


def best_f1_cuts(scores: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Per label (column): the score at which `score >= cut` has its best F1 on these rows (0 without positives)."""
    # heavy (pandas via tasks.modelling.calibration): loaded when this runs, so importing tasks.modelling.metrics stays light
    from tasks.modelling.calibration import choose_threshold

    cuts = np.zeros(scores.shape[1])
    for j in range(scores.shape[1]):
        if refs[:, j].any():
            cuts[j] = choose_threshold(scores[:, j], refs[:, j], {"max_f1": str(j)}).threshold
    return cuts


def decode_tag_ids(
    pred_ids: np.ndarray, label_ids: np.ndarray, label_names: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Per-sentence tag strings, keeping only positions whose label is not IGNORE_INDEX."""
    preds, refs = [], []
    for pred_row, label_row in zip(pred_ids, label_ids):
        keep = label_row != IGNORE_INDEX
        preds.append([label_names[i] for i in pred_row[keep]])
        refs.append([label_names[i] for i in label_row[keep]])
    return preds, refs


def _unpack_eval_prediction(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    # Models that return extra outputs (hidden states) make `predictions` a tuple; logits come first.
    logits = eval_pred.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    label_ids = eval_pred.label_ids
    if isinstance(label_ids, (tuple, list)):
        label_ids = label_ids[0]
    return np.asarray(logits), np.asarray(label_ids)


def _to_ints(values: Values) -> list[int]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"expected one class id per example, got shape {arr.shape}; take argmax of logits first")
    return arr.astype(np.int64).tolist()


def _to_floats(values: Values) -> list[float]:
    arr = np.asarray(values, dtype=np.float64)
    # A regression head gives [N, 1]; anything wider is not one value per example.
    if arr.ndim > 1 and arr.size != arr.shape[0]:
        raise ValueError(f"expected one value per example, got shape {arr.shape}")
    return arr.reshape(-1).tolist()


def _to_tag_lists(predictions: Sequence[Sequence[str]] | np.ndarray, references: Sequence[Sequence[str]] | np.ndarray):
    preds = [[str(tag) for tag in sentence] for sentence in predictions]
    refs = [[str(tag) for tag in sentence] for sentence in references]
    for i, (p, r) in enumerate(zip(preds, refs)):
        if len(p) != len(r):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags but {len(r)} reference tags")
    return preds, refs
