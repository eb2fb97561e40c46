"""Our own `evaluate.Metric` subclasses; the hub's metric scripts cannot be fetched offline.

Private: `tasks.modelling.metrics` imports this on first use because `evaluate` takes seconds to
import (it pulls in transformers). Call sites go through `tasks.modelling.metrics`.
"""

from __future__ import annotations

import warnings

import datasets
import evaluate
import numpy as np

from tasks.kinds import TaskKind, kind_of
from tasks.labels import entity_types, label_keys

_REPORT_AVERAGES = {"micro avg", "macro avg", "weighted avg"}


def per_class(names: list[str], precision, recall, f1, support) -> dict:
    """`precision_<label>`, `recall_<label>`, `f1_<label>`, `support_<label>` for each label, in id order."""
    out: dict = {}
    for i, key in enumerate(label_keys(names)):
        out |= {f"precision_{key}": precision[i], f"recall_{key}": recall[i], f"f1_{key}": f1[i]}
        out[f"support_{key}"] = support[i]
    return out


class ClassificationMetrics(evaluate.Metric):
    """Accuracy, macro and per-class precision/recall/F1/support, MCC; `f1` is class-1 F1 when binary."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Single-label classification: accuracy, precision/recall/F1 (macro and per class), MCC.",
            citation="",
            inputs_description="predictions, references: class ids; label_names: names in id order (optional)",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, label_names=None):
        # heavy (sklearn): loaded when this runs, so importing tasks.modelling.metric_modules stays light
        from sklearn.metrics import accuracy_score, matthews_corrcoef, precision_recall_fscore_support

        preds, refs = np.asarray(predictions), np.asarray(references)
        num_labels = len(label_names) if label_names else max(int(preds.max()), int(refs.max()), 1) + 1
        names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        out_of_range = sorted({int(x) for x in np.concatenate([preds, refs]) if not 0 <= x < num_labels})
        if out_of_range:
            raise ValueError(f"class ids {out_of_range} are outside the {num_labels} declared labels {names}")

        all_ids = list(range(num_labels))
        p, r, f, support = precision_recall_fscore_support(refs, preds, labels=all_ids, average=None, zero_division=0)
        # Macro over the classes that occur (sklearn's default): a class absent from a small
        # validation set and never predicted has no defined F1 and should not count as 0.
        present = sorted(set(refs.tolist()) | set(preds.tolist()))
        result = {
            "accuracy": accuracy_score(refs, preds),
            "precision_macro": float(np.mean(p[present])),
            "recall_macro": float(np.mean(r[present])),
            "f1_macro": float(np.mean(f[present])),
            "mcc": matthews_corrcoef(refs, preds),
        }
        result["f1"] = f[1] if num_labels == 2 else result["f1_macro"]
        return {k: float(v) for k, v in (result | per_class(names, p, r, f, support)).items()}


class RegressionMetrics(evaluate.Metric):
    """Pearson and Spearman correlation, MSE, RMSE, MAE."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Regression: Pearson and Spearman correlation, mean squared / absolute error.",
            citation="",
            inputs_description="predictions, references: floats",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        # heavy (scipy): loaded when this runs, so importing tasks.modelling.metric_modules stays light
        from scipy.stats import pearsonr, spearmanr

        preds, refs = np.asarray(predictions, dtype=float), np.asarray(references, dtype=float)
        mse = float(np.mean((preds - refs) ** 2))
        # A constant prediction (common early in training) has no defined correlation; NaN
        # would poison best-model selection, so report 0: no linear association measured.
        constant = len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(refs) == 0
        return {
            "pearson": 0.0 if constant else float(pearsonr(preds, refs)[0]),
            "spearman": 0.0 if constant else float(spearmanr(preds, refs)[0]),
            "mse": mse,
            "rmse": float(np.sqrt(mse)),
            "mae": float(np.mean(np.abs(preds - refs))),
        }


class NerMetrics(evaluate.Metric):
    """Entity-level precision/recall/F1 (seqeval, conlleval mode), per-type scores and support, token accuracy."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="NER: seqeval entity-level micro precision/recall/F1, per-type F1, token accuracy.",
            citation="",
            inputs_description="predictions, references: one list of tag strings per sentence; "
            "label_names: the tag set, so every entity type gets a key even when absent (optional)",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        # heavy (seqeval): loaded when this runs, so importing tasks.modelling.metric_modules stays light
        from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

        preds, refs = [list(s) for s in predictions], [list(s) for s in references]
        with warnings.catch_warnings():
            # seqeval warns when there are no predicted or true entities; the score is then 0.
            warnings.simplefilter("ignore")
            result = {
                "precision": precision_score(refs, preds),
                "recall": recall_score(refs, preds),
                "f1": f1_score(refs, preds),
                "accuracy": accuracy_score(refs, preds),
            }
            report = classification_report(refs, preds, output_dict=True, zero_division=0)
        types = entity_types(list(label_names)) if label_names else []
        types += sorted(t for t in report if t not in types and t not in _REPORT_AVERAGES)
        for entity_type, key in zip(types, label_keys(types)):
            row = report.get(entity_type, {})
            result[f"precision_{key}"] = row.get("precision", 0.0)
            result[f"recall_{key}"] = row.get("recall", 0.0)
            result[f"f1_{key}"] = row.get("f1-score", 0.0)
            result[f"support_{key}"] = row.get("support", 0)
        return {k: float(v) for k, v in result.items()}


class MultiLabelMetrics(evaluate.Metric):
    """Micro, macro and samples F1, subset accuracy, Hamming loss, per-label precision/recall/F1/support."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Multi-label classification: micro/macro/samples precision, recall and F1, subset "
            "accuracy, Hamming loss, per-label scores.",
            citation="",
            inputs_description="predictions, references: one 0/1 list per row over the label set; "
            "label_names: names in id order (optional)",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, label_names=None):
        # heavy (sklearn): loaded when this runs, so importing tasks.modelling.metric_modules stays light
        from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

        preds, refs = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if preds.ndim != 2 or preds.shape != refs.shape:
            raise ValueError(
                f"multi-label predictions {preds.shape} and references {refs.shape} must be [rows, labels]"
            )
        names = list(label_names) if label_names else [str(i) for i in range(refs.shape[1])]
        result: dict[str, float] = {
            "subset_accuracy": accuracy_score(refs, preds),
            "hamming_loss": hamming_loss(refs, preds),
        }
        with warnings.catch_warnings():
            # A row with no true and no predicted label has no samples-F1; zero_division says what it counts as.
            warnings.simplefilter("ignore")
            for average in ("micro", "macro", "samples"):
                # samples: an empty answer to an empty truth is right (1), as subset accuracy counts it.
                p, r, f, _ = precision_recall_fscore_support(
                    refs, preds, average=average, zero_division=1 if average == "samples" else 0
                )
                result.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
            p, r, f, support = precision_recall_fscore_support(refs, preds, average=None, zero_division=0)
        return {k: float(v) for k, v in (result | per_class(names, p, r, f, support)).items()}


def build_metric(task: str | TaskKind) -> evaluate.Metric:
    """A fresh in-memory metric module for a task kind."""
    kind = kind_of(task)
    cls: type[evaluate.Metric]
    if kind.predicts_value:
        cls = RegressionMetrics
    elif kind.is_token_level:
        cls = NerMetrics
    elif kind.is_single_label:
        cls = ClassificationMetrics
    elif kind.is_multi_label:
        cls = MultiLabelMetrics
    else:
        raise kind.unsupported("metric module")
    # In memory: nothing to share across processes, and no arrow cache files to clean up.
    return cls(keep_in_memory=True)
