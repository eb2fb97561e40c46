"""Evaluate: score the trained model on the held-out test split and write the evidence.

Writes, under RUN/evaluation, for every task kind: metrics.json, predictions.parquet,
worst_errors.csv, per_class_report.csv and confusion_matrix.png; the model card (README.md)
goes into the model folder, so it travels with the model. What "class" means per kind:

Classifiers (single texts, pairs, label sets) are first calibrated on the validation split
(tasks/modelling/calibration.py): the decision record (temperature and any threshold; per-label scaling and
thresholds for label sets) is returned in the result and written to RUN/evaluation/decision.json, never into
the trained model's folder; export builds it into the serving bundle's record. The test split is scored with it
applied, as every scorer applies it, and reliability_diagram.png shows the test split before and after.

- classification, pair_classification: the labels.
- ner: entity types; the report is seqeval's entity-level scores per type, the confusion
  matrix counts words by entity type (B-/I- merged, "O" included; first sub-token's tag).
- regression: equal-width ranges of the target; the report gives count, MAE and mean
  prediction per range, the matrix counts true range against predicted range. A
  prediction-vs-truth scatter plot (prediction_scatter.png) comes with it.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.bundle import read_meta
from tasks.config import PipelineConfig
from tasks.inference.blend import BASELINE_FILE, BaselineScorer, BlendedScorer, mix_logits
from tasks.inference.decode import PLAIN, Decision, decode_logits
from tasks.inference.windows import long_text_of_bundle
from tasks.io import read_frame, save_figure, write_csv, write_json, write_parquet
from tasks.kinds import kind_of
from tasks.labels import entity_type, entity_types, label_keys
from tasks.modelling.baselines import compare_with_baselines, comparison_markdown, comparison_metrics
from tasks.modelling.blend import blend_text, choose_blend
from tasks.modelling.calibration import (
    binary_view,
    calibrated_probabilities,
    ece_floor,
    expected_calibration_error,
    fit_decision,
    fit_multi_label_decision,
    negative_log_likelihood,
    plot_reliability_diagram,
)
from tasks.modelling.confidence import interval_metrics
from tasks.modelling.metrics import primary_metric
from tasks.modelling.model_card import write_model_card
from tasks.modelling.predict import metrics_of, predict_logits, references_of, score_frame, torch_forward
from tasks.modelling.sizing import with_recorded_length
from tasks.progress import counted_calls
from tasks.results import BaselineResult, CleanResult, EvaluationResult

log = logging.getLogger(__name__)
WORST_N = 50
WEAK_F1 = 0.5  # a class scoring below this on test is reported as weak
DECISION_FILE = "decision.json"  # RUN/evaluation/: the decision record, for export and for a resumed run


def load_trained(model_dir: str | Path):
    """The fine-tuned model and tokenizer from a model folder."""
    # heavy (transformers): loaded when this runs, so importing tasks.modelling.evaluate stays light
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    meta = read_meta(model_dir).as_dict()
    cls = (
        AutoModelForTokenClassification if kind_of(meta["task"]).is_token_level else AutoModelForSequenceClassification
    )
    return cls.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), meta


def frame_of_predictions(df: pd.DataFrame, scored: dict, task: str, labels: list[str] | None) -> pd.DataFrame:
    """The test split with prediction, confidence and correctness per row."""
    out = df.drop(columns=[c for c in ("raw_index",) if c in df.columns]).copy()
    preds, refs = scored["predictions"], scored["references"]
    kind = kind_of(task)
    if kind.predicts_value:
        out["prediction"] = preds
        out["abs_error"] = np.abs(np.array(preds) - np.array(refs))
    elif kind.is_token_level:
        out["prediction"] = preds
        out["correct"] = [p == r for p, r in zip(preds, refs)]
        out["confidence"] = scored["confidence"]
        out["mistakes"] = [describe_tag_mistakes(t, r, p) for t, r, p in zip(df["tokens"], refs, preds)]
    elif kind.is_single_label:
        assert labels is not None, "a classifier has a label set (None only for regression)"
        out["prediction"] = [labels[p] for p in preds]
        out["correct"] = [p == r for p, r in zip(preds, refs)]
        out["confidence"] = scored["confidence"]
    elif kind.is_multi_label:  # right only when the whole label set is; the mistakes name the labels
        assert labels is not None, "a multi-label model has a label set"
        out["prediction"] = kind.answers(preds, labels)
        out["correct"] = [list(p) == list(r) for p, r in zip(preds, refs)]
        out["confidence"] = scored["confidence"]
        out["mistakes"] = [
            "; ".join(
                [f"missed {labels[j]}" for j, (a, b) in enumerate(zip(p, r)) if b and not a]
                + [f"added {labels[j]}" for j, (a, b) in enumerate(zip(p, r)) if a and not b]
            )
            for p, r in zip(preds, refs)
        ]
    else:
        raise kind.unsupported("prediction frame")
    return out


def describe_tag_mistakes(tokens: list[str], refs: list[str], preds: list[str]) -> str:
    """The words tagged wrongly, as 'word: true->predicted', for reading the worst NER errors."""
    return "; ".join(f"{w}: {r}->{p}" for w, r, p in zip(tokens, refs, preds) if r != p)


def worst_errors(pred: pd.DataFrame, task: str, n: int = WORST_N) -> pd.DataFrame:
    """The N most confident mistakes (largest errors for regression)."""
    if kind_of(task).predicts_value:
        return pred.sort_values("abs_error", ascending=False).head(n)
    wrong = pred[~pred["correct"]]
    return wrong.sort_values("confidence", ascending=False).head(n)


def per_class_report(metrics: dict, classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per label (classification) or entity type (NER)."""
    rows = []
    for name, key in zip(classes, label_keys(classes)):
        rows.append(
            {
                "class": name,
                **{m: metrics.get(f"{m}_{key}") for m in ("precision", "recall", "f1")},
                "support": metrics.get(f"support_{key}"),
            }
        )
    return pd.DataFrame(rows)


def find_weak_classes(scored: dict, task: str, labels: list[str] | None) -> list[dict]:
    """Classes (NER: entity types) with test F1 below WEAK_F1 or never predicted, weakest first.

    A high accuracy hides them: on skewed data a model can score 0.95 while never predicting
    the rarest class.
    """
    kind = kind_of(task)
    if not kind.has_labels:
        return []
    assert labels is not None, "classification and NER have a label set (None only for regression)"
    metrics = scored["metrics"]
    if kind.is_token_level:
        classes, predicted = entity_types(labels), None
    elif kind.is_single_label:
        classes = labels
        predicted = np.bincount(np.asarray(scored["predictions"], dtype=np.int64), minlength=len(labels))
    elif kind.is_multi_label:  # per label: the rows it was given to
        classes = labels
        predicted = np.asarray(scored["predictions"], dtype=np.int64).reshape(-1, len(labels)).sum(axis=0)
    else:
        raise kind.unsupported("weak-class rule")
    weak = []
    for i, (name, key) in enumerate(zip(classes, label_keys(classes))):
        f1, support = metrics.get(f"f1_{key}"), int(metrics.get(f"support_{key}") or 0)
        never = bool(predicted is not None and support > 0 and predicted[i] == 0)
        if support and (never or (f1 is not None and f1 < WEAK_F1)):
            weak.append(
                {
                    "class": name,
                    "f1": float(f1 or 0.0),
                    "support": support,
                    "predicted": None if predicted is None else int(predicted[i]),
                    "never_predicted": never,
                }
            )
    return sorted(weak, key=lambda w: (w["f1"], w["support"]))


def describe_weak_classes(weak: list[dict], n_classes: int, unit: str = "test rows") -> str:
    """The weak classes in plain words, with what to do about them; empty when there are none."""
    if not weak:
        return ""
    parts = []
    for w in weak:
        what = "is never predicted" if w["never_predicted"] else f"has F1 {w['f1']:.2f}"
        seen = f", predicted {w['predicted']} times" if w["predicted"] and not w["never_predicted"] else ""
        parts.append(f"'{w['class']}' {what} ({w['support']} {unit}{seen})")
    return (
        f"{len(weak)} of {n_classes} classes are weak on test (F1 below {WEAK_F1} or never predicted): "
        + "; ".join(parts)
        + ". Add training examples of them, keep training.class_weights auto (or set "
        "'balanced'), choose the model by macro-F1, or merge them into a neighbour with data.label_map."
    )


def weak_classes_markdown(weak: list[dict], text: str) -> str:
    """The weak-class report as a Prefect artifact: the sentence, then one row per class."""
    if not weak:
        return f"# Weak classes\n\nNone: every class has test F1 of at least {WEAK_F1} and is predicted.\n"
    rows = [
        f"| {w['class']} | {w['f1']:.2f} | {w['support']} | "
        f"{'never' if w['never_predicted'] else w['predicted'] if w['predicted'] is not None else ''} |"
        for w in weak
    ]
    return (
        "\n".join(
            [
                "# Weak classes",
                "",
                text,
                "",
                "| class | test F1 | test support | predicted |",
                "|---|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def regression_ranges(refs: list[float], n: int = 5) -> np.ndarray:
    """Edges of n equal-width ranges over the true values; range_ids puts values beyond them in the outer ranges."""
    lo, hi = float(np.min(refs)), float(np.max(refs))
    return np.linspace(lo, hi if hi > lo else lo + 1.0, n + 1)


def range_names(edges: np.ndarray) -> list[str]:
    return [f"[{a:.2g}, {b:.2g})" for a, b in itertools.pairwise(edges)]


def range_ids(values, edges: np.ndarray) -> list[int]:
    """The range index of each value; values outside the edges go to the first or last range."""
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2).tolist()


def per_range_report(refs: list[float], preds: list[float], edges: np.ndarray) -> pd.DataFrame:
    """Count, MAE and mean prediction per range of the true value (regression's per-class report)."""
    refs_a, preds_a = np.asarray(refs, dtype=float), np.asarray(preds, dtype=float)
    ids = np.asarray(range_ids(refs_a, edges))
    rows = []
    for i, name in enumerate(range_names(edges)):
        sel = ids == i
        rows.append(
            {
                "class": name,
                "support": int(sel.sum()),
                "mae": float(np.abs(preds_a[sel] - refs_a[sel]).mean()) if sel.any() else None,
                "mean_true": float(refs_a[sel].mean()) if sel.any() else None,
                "mean_prediction": float(preds_a[sel].mean()) if sel.any() else None,
            }
        )
    return pd.DataFrame(rows)


def confusion_inputs(scored: dict, task: str, labels: list[str] | None) -> tuple[list[int], list[int], list[str]]:
    """(true ids, predicted ids, class names) for the confusion matrix of any task kind."""
    refs, preds = scored["references"], scored["predictions"]
    kind = kind_of(task)
    if kind.predicts_value:
        edges = regression_ranges(refs)
        return range_ids(refs, edges), range_ids(preds, edges), range_names(edges)
    assert labels is not None, "classification and NER have a label set (None only for regression)"
    if kind.is_token_level:
        names = list(dict.fromkeys(entity_type(t) for t in labels))
        index = {n: i for i, n in enumerate(names)}
        flat_r = [index[entity_type(t)] for sent in refs for t in sent]
        flat_p = [index[entity_type(t)] for sent in preds for t in sent]
        return flat_r, flat_p, names
    if kind.is_single_label:
        return list(refs), list(preds), list(labels)
    raise kind.unsupported("confusion matrix")


def plot_prediction_scatter(refs: list[float], preds: list[float], path: Path) -> str:
    """Prediction against truth, with the diagonal a perfect model would sit on."""
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib

    matplotlib.use("Agg")
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(refs, preds, s=6, alpha=0.4)
    lo, hi = min(min(refs), min(preds)), max(max(refs), max(preds))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return str(path)


def plot_confusion_matrix(refs: list[int], preds: list[int], labels: list[str], path: Path) -> str:
    """A confusion matrix PNG (rows: truth, columns: prediction)."""
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib

    matplotlib.use("Agg")
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib.pyplot as plt

    k = len(labels)
    cm = np.zeros((k, k), dtype=int)
    for r, p in zip(refs, preds):
        cm[r, p] += 1
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * k, 1.0 + 0.6 * k), dpi=120)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return str(path)


def write_class_report(scored: dict, task: str, labels: list[str] | None, path: Path) -> str:
    """per_class_report.csv: per label, per entity type (NER) or per target range (regression)."""
    kind = kind_of(task)
    if kind.predicts_value:
        refs = scored["references"]
        report = per_range_report(refs, scored["predictions"], regression_ranges(refs))
    elif kind.is_token_level:
        assert labels is not None, "NER has a tag set (None only for regression)"
        report = per_class_report(scored["metrics"], entity_types(labels))
    elif kind.is_single_label:
        assert labels is not None, "a classifier has a label set (None only for regression)"
        report = per_class_report(scored["metrics"], labels)
    elif kind.is_multi_label:
        assert labels is not None, "a multi-label model has a label set"
        report = per_class_report(scored["metrics"], labels).join(
            label_confusions(scored["predictions"], scored["references"], labels).drop(columns="class")
        )
    else:
        raise kind.unsupported("per-class report")
    write_csv(report, path)
    return str(path)


def label_confusions(preds, refs, labels: list[str]) -> pd.DataFrame:
    """Per label: true positives, false positives, false negatives and true negatives over the rows."""
    p = np.asarray(preds, dtype=bool).reshape(-1, len(labels))
    r = np.asarray(refs, dtype=bool).reshape(-1, len(labels))
    return pd.DataFrame(
        {
            "class": labels,
            "tp": (p & r).sum(axis=0),
            "fp": (p & ~r).sum(axis=0),
            "fn": (~p & r).sum(axis=0),
            "tn": (~p & ~r).sum(axis=0),
        }
    )


def plot_label_confusions(preds, refs, labels: list[str], path: Path) -> str:
    """Multi-label confusion: one row per label with its TP, FN, FP and TN counts, shaded by share of rows."""
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib

    matplotlib.use("Agg")
    # heavy (matplotlib): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import matplotlib.pyplot as plt

    counts = label_confusions(preds, refs, labels)[["tp", "fn", "fp", "tn"]].to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(5.0, 1.0 + 0.35 * k), dpi=120)
    ax.imshow(share, cmap="Blues", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(4), ["true +", "missed", "added", "true -"])
    ax.set_yticks(range(k), labels)
    for i in range(k):
        for j in range(4):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return str(path)


def calibrate_model(
    forward, tokenizer, model_dir: Path, data: CleanResult, cfg: PipelineConfig, baseline_onnx: str | None = None
) -> tuple[dict, BlendedScorer | None]:
    """The decision record fitted on the validation split: temperature and threshold (per label for label sets).

    baseline_onnx: the bag of words' graph (model.blend auto); when validation prefers a mixture with it, the
    record holds the blend and the decision is fitted on the blended logits; the blend's scorer comes back too.
    """
    assert data.labels is not None, "only classifiers are calibrated, and they have a label set"
    validation = read_frame(data.splits["validation"])
    logits = predict_logits(
        forward,
        tokenizer,
        validation,
        cfg.data.task,
        cfg.model.length(),
        cfg.training.eval_batch_size,
        long_text=long_text_of_bundle(read_meta(model_dir).as_dict()),
    )
    refs = np.asarray(references_of(validation, cfg.data.task, data.labels))
    scorer, chosen = None, None
    if baseline_onnx is not None and len(refs):
        texts = list(validation["text"])
        graph = BaselineScorer(baseline_onnx)  # loaded once: validation here, test through the scorer
        baseline = graph.probabilities(texts)
        blend, chosen = choose_blend(
            np.stack(logits), baseline, refs, cfg.data.task, data.labels, primary_metric(cfg.data.task)
        )
        log.info("%s", chosen["text"])
        if blend is not None:
            scorer = BlendedScorer(blend, graph)
            logits = mix_logits(logits, baseline, blend)
    fit = fit_multi_label_decision if kind_of(cfg.data.task).is_multi_label else fit_decision
    record = fit(cfg.decision, np.stack(logits), refs, data.labels)
    if chosen is not None:  # weight 1: the model serves alone, and the record says what validation saw
        record["blend"] = {
            "weight": chosen["weight"],
            "temperature": chosen["temperature"],
            "file": BASELINE_FILE,
            "baseline": "bag_of_words",
            "validation": chosen,
        }
    return record, scorer


def record_test_calibration(record: dict, scored: dict) -> dict:
    """The run's calibration metrics (validation: fitted; test: held out); the test figures join the record."""
    (logits, refs, t), (raw, _, _) = calibration_view(record, scored), calibration_view(record, scored, False)
    v = record["validation"]
    after = calibrated_probabilities(logits, t)
    record["test"] = {
        "rows": len(scored["references"]),
        "ece_before": expected_calibration_error(calibrated_probabilities(raw, 1.0), refs),
        "ece_after": expected_calibration_error(after, refs),
        "ece_floor": ece_floor(after),
        "nll_before": negative_log_likelihood(raw, refs),
        "nll_after": negative_log_likelihood(logits, refs, t),
    }
    out = {
        **({} if record.get("scales") is not None else {"calibration_temperature": t}),
        **{f"test_{k}": float(x) for k, x in record["test"].items() if k != "rows"},
        **{f"validation_{k}": float(v[k]) for k in ("ece_before", "ece_after", "nll_before", "nll_after")},
    }
    if record.get("thresholds") is not None:  # multi-label: per-label values, their mean in the run's metrics
        out["decision_threshold_mean"] = float(np.mean(record["thresholds"]))
    if record["threshold"] is not None:
        out["decision_threshold"] = float(record["threshold"])
        out.update({f"validation_threshold_{k}": float(v[k]) for k in ("precision", "recall", "f1", "target_met")})
    return out


def calibration_view(record: dict, scored: dict, calibrated: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(logits, class ids, temperature) on which the softmax calibration measures read the test split.

    Multi-label: every label decision as a two-class row, with the label's Platt scaling applied when calibrated.
    """
    logits, refs = np.stack(scored["logits"]), np.asarray(scored["references"])
    if record.get("scales") is not None:
        scaling = (record["scales"], record["biases"]) if calibrated else (None, None)
        return (*binary_view(logits, refs, *scaling), 1.0)
    return logits, refs, record["temperature"] if calibrated else 1.0


def plot_test_reliability(record: dict, scored: dict, path: Path) -> str:
    """The test split's reliability diagram before and after temperature scaling."""
    raw, refs, _ = calibration_view(record, scored, False)
    logits, _, t = calibration_view(record, scored)
    name = "per-label Platt" if record.get("scales") is not None else f"T = {t:.3f}"
    return plot_reliability_diagram(
        {
            "test, uncalibrated": (calibrated_probabilities(raw, 1.0), refs),
            f"test, {name}": (calibrated_probabilities(logits, t), refs),
        },
        path,
    )


def evaluate_model(
    model_dir: str | Path,
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: str | Path,
    source: str = "",
    baselines: BaselineResult | None = None,
) -> EvaluationResult:
    """Score the model on the test split; write metrics, predictions, errors, plots and the model card.

    baselines: the baselines stage's result; the model is compared with the best of them on the same rows.
    """
    # heavy (torch): loaded when this runs, so importing tasks.modelling.evaluate stays light
    import torch

    model, tokenizer, meta = load_trained(model_dir)
    cfg = with_recorded_length(cfg, meta)  # max_length as trained (auto resolved), not as configured
    if torch.cuda.is_available() and not cfg.training.use_cpu:
        model.to("cuda")  # full precision still: the test metrics must match what was trained
    task, labels = cfg.data.task, data.labels
    kind = kind_of(task)
    forward = torch_forward(model)
    record, blend = None, None
    if kind.calibrated:
        onnx = baselines.onnx if baselines is not None else None
        record, blend = calibrate_model(forward, tokenizer, Path(model_dir), data, cfg, onnx)
    test = read_frame(data.splits["test"])
    decision = Decision.of_meta({"labels": labels, "decision": record}) if record is not None else PLAIN
    batches = -(-len(test) // cfg.training.eval_batch_size)
    with counted_calls(forward, batches, "evaluate", log) as counted:
        scored = score_frame(
            counted,
            tokenizer,
            test,
            task,
            labels,
            cfg.model.length(),
            cfg.training.eval_batch_size,
            decision,
            long_text_of_bundle(meta),
            blend,
        )
    metrics = {f"test_{k}": v for k, v in scored["metrics"].items()}
    if baselines is not None and baselines.onnx is not None and record is not None:
        metrics["blend_weight"] = blend.blend.weight if blend is not None else 1.0
        if blend is not None:  # what the blend added on test: the model alone, at its own temperature
            alone = decode_logits(task, scored["model_logits"], labels, Decision(blend.blend.temperature))
            metrics[f"test_unblended_{primary_metric(task)}"] = metrics_of(alone, test)[primary_metric(task)]
    # Small test splits move a score by points; the interval says by how many.
    metrics.update({f"test_{k}": v for k, v in interval_metrics(task, scored, labels).items()})
    out = Path(run_dir) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    pred = frame_of_predictions(test, scored, task, labels)
    write_parquet(pred, out / "predictions.parquet")
    write_csv(worst_errors(pred, task), out / "worst_errors.csv")
    files = {
        "metrics": write_json(out / "metrics.json", metrics),
        "predictions": str(out / "predictions.parquet"),
        "worst_errors": str(out / "worst_errors.csv"),
    }
    files["per_class_report"] = write_class_report(scored, task, labels, out / "per_class_report.csv")
    if kind.is_multi_label:  # one 2 x 2 per label, not one matrix over label sets
        assert labels is not None, "a multi-label model has a label set"
        classes = list(labels)
        files["confusion_matrix"] = plot_label_confusions(
            scored["predictions"], scored["references"], labels, out / "confusion_matrix.png"
        )
    else:
        refs, preds, classes = confusion_inputs(scored, task, labels)
        files["confusion_matrix"] = plot_confusion_matrix(refs, preds, classes, out / "confusion_matrix.png")
    if record is not None:  # the model card reads the test figures from the model folder's meta
        metrics.update(record_test_calibration(record, scored))
        files["decision"] = write_json(out / DECISION_FILE, record)  # export reads it when resumed
        files["reliability_diagram"] = plot_test_reliability(record, scored, out / "reliability_diagram.png")
    if kind.predicts_value:
        files["prediction_scatter"] = plot_prediction_scatter(
            scored["references"], scored["predictions"], out / "prediction_scatter.png"
        )
    comparison = None
    if baselines is not None:
        served = f"blended ({blend.blend.weight:.2f} fine-tuned + bag of words)" if blend is not None else "fine-tuned"
        comparison = compare_with_baselines(
            baselines, task, scored["predictions"], scored["references"], labels, served
        )
        metrics.update(comparison_metrics(baselines, comparison))
        files["baselines"] = write_json(out / "baselines.json", {"comparison": comparison, **baselines.scores})
        if comparison is not None:
            (log.info if comparison["beats"] else log.warning)("%s", comparison["text"])
    weak = find_weak_classes(scored, task, labels)
    n_classes = len(classes) - (1 if kind.is_token_level else 0)  # NER's matrix has "O", which is no entity type
    weak_text = describe_weak_classes(weak, n_classes, kind.report_unit)
    files["weak_classes"] = write_json(out / "weak_classes.json", weak)
    files["model_card"] = write_model_card(
        Path(model_dir),
        cfg,
        data,
        scored["metrics"],
        source,
        weak_text or f"None: every class has test F1 of at least {WEAK_F1} and is predicted.",
        "\n\n".join(
            part
            for part in (
                comparison_markdown(baselines, comparison) if baselines is not None else "",
                blend_text(record),
            )
            if part
        ),
        record,
    )
    return EvaluationResult(
        metrics=metrics,
        dir=str(out),
        files=files,
        weak_classes=weak,
        weak_classes_text=weak_text,
        baselines=comparison,
        decision=record,
    )
