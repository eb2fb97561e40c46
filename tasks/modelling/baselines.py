"""Cheap baselines on the same splits as the model: what a user would fit in seconds instead.

- bag_of_words: TF-IDF word 1-2-grams (sublinear tf) + logistic regression with balanced class
  weights (ridge for regression); pairs: both texts' vectors and their elementwise product (the
  words they share).
- probe: the same linear model on the frozen pretrained encoder's mean-pooled embeddings; pairs:
  [u, v, |u - v|, u * v] of the two texts' embeddings.
- multi-label: one logistic regression per label (unweighted), each label's threshold chosen for its best
  F1 on validation (the probe: on out-of-fold probabilities of its train sample), as the model's are.
- cosine (pair regression only): the cosine of the two texts' frozen embeddings, mapped to the
  target by a line fitted on train.

Each linear model's regularisation is picked on the validation split (as a user tuning it would),
then the baseline is scored on the test split with the task's metrics and bootstrap intervals.
Evaluation compares the model with the best of them on the same test rows (`compare_with_baselines`):
a paired bootstrap of the difference, so "beats" means beyond the interval, not by a lucky split.
NER has no baseline here: a bag of words cannot tag words.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DecisionConfig, PipelineConfig
from tasks.inference.batching import INPUT_NAMES, length_buckets, pad_rows
from tasks.inference.blend import bag_of_words_text
from tasks.io import read_frame, write_json, write_parquet
from tasks.kinds import kind_of
from tasks.modelling.blend import BASELINE_ONNX, export_bag_of_words
from tasks.modelling.calibration import label_thresholds
from tasks.modelling.confidence import interval_metrics, paired_difference_interval
from tasks.modelling.encode import resolve_model_path
from tasks.modelling.metrics import compute_metrics_for, greater_is_better, primary_metric
from tasks.modelling.sizing import choose_max_length, token_lengths
from tasks.results import BaselineResult, CleanResult

log = logging.getLogger(__name__)

LOGISTIC_C = (0.25, 1.0, 4.0, 16.0)
RIDGE_ALPHA = (0.1, 1.0, 10.0, 100.0)
EMBED_BATCH = 64


def applicable_kinds(cfg: PipelineConfig, pairs: bool) -> list[str]:
    """The configured baselines that fit this task (cosine needs pairs and a numeric target)."""
    kind = kind_of(cfg.data.task)
    if not cfg.baselines.enabled or not kind.has_baselines:
        return []
    return [k for k in cfg.baselines.kinds if k != "cosine" or (pairs and kind.predicts_value)]


def fits_values(task: str) -> bool:
    """Whether a kind's baselines fit values (ridge) rather than classes (logistic); refuses any other kind."""
    kind = kind_of(task)
    if not (kind.predicts_value or kind.is_single_label or kind.is_multi_label):
        raise kind.unsupported("baselines")
    return kind.predicts_value


def logistic(task: str, c: float | None = None):
    """Logistic regression with balanced class weights; multi-label: one unweighted model per label.

    Balanced weights on a label carried by 1% of the rows make its model answer yes to a third of them
    (micro-F1 0.08 against 0.3 unweighted on the tweet entity types): a user fits them plain.
    """
    # heavy (sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    if kind_of(task).is_multi_label:
        return OneVsRestClassifier(LogisticRegression(**({"C": c} if c is not None else {}), max_iter=2000))
    return LogisticRegression(
        **({"C": c} if c is not None else {}), class_weight="balanced", max_iter=2000, random_state=0
    )


def targets_of(df: pd.DataFrame, task: str, labels: list[str] | None) -> np.ndarray:
    """Class ids (labels' order) or float targets of a split, as the kind reads them for every scorer."""
    return np.asarray(kind_of(task).references_of(df, labels))


def probe_sample(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """At most `limit` rows, every label kept in its share (a stable draw), so the probe's cost is bounded."""
    if len(df) <= limit:
        return df
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    if df["label"].dtype.kind == "f":  # regression: a plain random sample
        return df.iloc[np.sort(order[:limit])]
    share = limit / len(df)
    keep = []
    for _, positions in pd.Series(order).groupby(df["label"].astype(str).to_numpy()[order]):
        keep.extend(positions.to_numpy()[: max(1, round(len(positions) * share))])
    return df.iloc[np.sort(np.asarray(keep))]


def bag_of_words_features(splits: dict[str, pd.DataFrame], max_features: int) -> tuple[dict[str, Any], Any]:
    """TF-IDF matrices per split, fitted on train (pairs: [A, B, A * B] with one vocabulary); and the vectorizer.

    Words are found by bag_of_words_text (scikit-learn's default lowercase and token pattern), so the fitted
    vectorizer converts to an ONNX graph that reads the same words (model.blend).
    """
    # heavy (scipy, sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = splits["train"]
    pairs = "text_pair" in train.columns
    corpus = list(train["text"]) + (list(train["text_pair"]) if pairs else [])
    vec = TfidfVectorizer(
        lowercase=False,
        token_pattern=r"[^ ]+",
        ngram_range=(1, 2),
        sublinear_tf=True,
        max_features=max_features,
        dtype=np.float32,
    )
    vec.fit(words_of(corpus))
    out = {}
    for name, df in splits.items():
        a = vec.transform(words_of(df["text"]))
        if pairs:
            b = vec.transform(words_of(df["text_pair"]))
            out[name] = hstack([a, b, a.multiply(b)]).tocsr()
        else:
            out[name] = a
    return out, vec


def words_of(texts) -> list[str]:
    """Each text as the bag of words reads it (tasks.inference.blend.bag_of_words_text)."""
    return [bag_of_words_text(str(t)) for t in texts]


def embed_texts(texts: list[str], model, tokenizer, max_length: int) -> np.ndarray:
    """Mean-pooled last hidden states of the frozen encoder, L2-normalised (length-sorted batches)."""
    # heavy (torch): loaded when this runs, so importing tasks.modelling.baselines stays light
    import torch

    enc = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in INPUT_NAMES if k in enc]
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for idx in length_buckets([len(ids) for ids in enc["input_ids"]], EMBED_BATCH):
            batch = pad_rows({k: [enc[k][i] for i in idx] for k in keys}, tokenizer.pad_token_id or 0)
            inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
            hidden = model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().numpy()
    return out


def embedding_features(
    splits: dict[str, pd.DataFrame], cfg: PipelineConfig
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray] | None]]:
    """Probe features per split ([u, v, |u-v|, u*v] for pairs) and each split's (u, v) pair embeddings."""
    # heavy (transformers): loaded when this runs, so importing tasks.modelling.baselines stays light
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.model.revision)
    model = AutoModel.from_pretrained(path, revision=cfg.model.revision).eval()
    if cfg.model.max_length == "auto":  # as training will choose it: from the train split's token lengths
        length = choose_max_length(token_lengths(tokenizer, splits["train"], cfg.data.task), 512, cfg.model.stride)
    else:
        length = min(cfg.model.length(), 512)
    features: dict[str, np.ndarray] = {}
    pair_vectors: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
    for name, df in splits.items():
        u = embed_texts(list(df["text"]), model, tokenizer, length)
        if "text_pair" in df.columns:
            v = embed_texts(list(df["text_pair"]), model, tokenizer, length)
            features[name], pair_vectors[name] = np.hstack([u, v, np.abs(u - v), u * v]), (u, v)
        else:
            features[name], pair_vectors[name] = u, None
    return features, pair_vectors


def fit_linear(task: str, x: dict[str, Any], y: dict[str, np.ndarray], primary: str, labels: list[str] | None):
    """The linear model (logistic or ridge) whose regularisation scores best on validation; (model, chosen)."""
    # heavy (sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
    from sklearn.linear_model import Ridge

    if fits_values(task):
        grid = [("alpha", a, Ridge(alpha=a)) for a in RIDGE_ALPHA]
    else:
        grid = [("C", c, logistic(task, c)) for c in LOGISTIC_C]
    if len(y["validation"]) == 0:  # no validation split: the middle of the grid, unchosen
        name, value, model = grid[1]
        return model.fit(x["train"], y["train"]), {name: value}
    sign = 1.0 if greater_is_better(primary) else -1.0
    best = None
    for name, value, model in grid:
        model.fit(x["train"], y["train"])
        score = compute_metrics_for(task, model.predict(x["validation"]), y["validation"], labels)[primary]
        if best is None or sign * score > sign * best[0]:
            best = (score, model, {name: value})
    assert best is not None  # the grid is never empty
    return best[1], best[2]


def label_thresholds_for(probs: np.ndarray, y: np.ndarray, labels: list[str] | None) -> np.ndarray:
    """Multi-label: each label's best-F1 threshold on held-out probabilities, as the model gets its own."""
    names = list(labels) if labels else [str(j) for j in range(y.shape[1])]
    return np.asarray(label_thresholds(DecisionConfig(), probs, y, names)[0])


def predict_baseline(task: str, model, x, thresholds: np.ndarray | None) -> np.ndarray:
    """The baseline's answers: the model's own, or (multi-label) each label's probability against its threshold."""
    if thresholds is None:
        return model.predict(x)
    return (model.predict_proba(x) >= thresholds).astype(np.int64)


def fit_linear_cv(task: str, x: np.ndarray, y: np.ndarray):
    """The linear model with its regularisation chosen by 5-fold cross-validation on train; (model, chosen)."""
    # heavy (sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GridSearchCV

    if fits_values(task):
        model = RidgeCV(alphas=RIDGE_ALPHA).fit(x, y)
        return model, {"alpha": float(model.alpha_)}
    if kind_of(task).is_multi_label:  # plain folds: a label set has no single class to stratify by
        grid, folds, scoring = {"estimator__C": list(LOGISTIC_C)}, min(5, len(y)), "f1_micro"
    else:
        counts = np.bincount(y)
        folds = int(min(5, max(2, counts[counts > 0].min())))  # the smallest class still in every fold
        grid, scoring = {"C": list(LOGISTIC_C)}, "f1_macro"
    search = GridSearchCV(logistic(task), grid, cv=folds, scoring=scoring).fit(x, y)
    return search.best_estimator_, {"C": float(next(iter(search.best_params_.values())))}


def fit_cosine(pair_vectors: dict[str, tuple[np.ndarray, np.ndarray] | None], y_train: np.ndarray):
    """The pair's cosine (embeddings are unit length: a dot product), mapped to the target by a line."""
    # heavy (sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
    from sklearn.linear_model import LinearRegression

    cos = {k: (uv[0] * uv[1]).sum(1, keepdims=True) for k, uv in pair_vectors.items() if uv is not None}
    line = LinearRegression().fit(cos["train"], y_train)
    return line, cos


def score_baseline(task: str, preds: np.ndarray, refs: np.ndarray, labels: list[str] | None) -> dict[str, float]:
    """The task's metrics of a baseline's test answers, with the bootstrap intervals evaluation reports."""
    answers = preds.tolist()
    metrics = compute_metrics_for(task, answers, refs.tolist(), labels)
    scored = {"predictions": answers, "references": refs.tolist()}
    return metrics | (interval_metrics(task, scored, labels) if len(refs) > 1 else {})


def fit_baselines(data: CleanResult, cfg: PipelineConfig, run_dir: str | Path) -> BaselineResult:
    """Fit every applicable baseline on train, pick its regularisation on validation, score it on test.

    Writes RUN/baselines/metrics.json (per baseline: its test metrics, intervals, choice and time) and
    RUN/baselines/test_predictions.parquet (one column per baseline, the test split's row order).
    """
    task, labels = cfg.data.task, data.labels
    metric = primary_metric(task)
    out = Path(run_dir) / "baselines"
    splits = {name: read_frame(path) for name, path in data.splits.items()}
    kinds = applicable_kinds(cfg, "text_pair" in splits["train"].columns)
    if not kinds:
        return BaselineResult(dir=str(out), metric=metric, scores={}, predictions=None, seconds=0.0)
    out.mkdir(parents=True, exist_ok=True)
    y = {name: targets_of(df, task, labels) for name, df in splits.items()}
    multi_label = kind_of(task).is_multi_label
    scores: dict[str, dict] = {}
    test_predictions: dict[str, list] = {}
    onnx = None
    started = time.perf_counter()
    if "bag_of_words" in kinds:
        t0 = time.perf_counter()
        x, vectorizer = bag_of_words_features(splits, cfg.baselines.max_features)
        model, chosen = fit_linear(task, x, y, metric, labels)
        if blends(cfg, splits["train"]):
            onnx = export_bag_of_words(vectorizer, model, list(splits["train"]["text"]), out / BASELINE_ONNX)
        cuts = None
        if multi_label and len(y["validation"]):  # thresholds on validation, as the fine-tuned model's are
            cuts = label_thresholds_for(model.predict_proba(x["validation"]), y["validation"], labels)
        preds = predict_baseline(task, model, x["test"], cuts)
        scores["bag_of_words"] = {
            "test": score_baseline(task, preds, y["test"], labels),
            "chosen": chosen,
            "seconds": time.perf_counter() - t0,
            "train_rows": len(y["train"]),
        }
        test_predictions["bag_of_words"] = preds.tolist()
    if "probe" in kinds or "cosine" in kinds:
        t0 = time.perf_counter()
        # Train is sampled and the regularisation chosen by cross-validation on it: the encoder's forward
        # pass is the slow part, so validation is not embedded at all; test is scored whole.
        sample = probe_sample(splits["train"], cfg.baselines.probe_max_rows, cfg.training.seed)
        x, pair_vectors = embedding_features({"train": sample, "test": splits["test"]}, cfg)
        y_probe = {"train": targets_of(sample, task, labels), "test": y["test"]}
        embed_seconds = time.perf_counter() - t0
        if "probe" in kinds:
            model, chosen = fit_linear_cv(task, x["train"], y_probe["train"])
            cuts = None
            if multi_label:  # validation is not embedded: thresholds from out-of-fold probabilities on train
                # heavy (sklearn): loaded when this runs, so importing tasks.modelling.baselines stays light
                from sklearn.base import clone
                from sklearn.model_selection import cross_val_predict

                folds = min(5, len(y_probe["train"]))
                held_out = cross_val_predict(
                    clone(model), x["train"], y_probe["train"], cv=folds, method="predict_proba"
                )
                cuts = label_thresholds_for(held_out, y_probe["train"], labels)
            preds = predict_baseline(task, model, x["test"], cuts)
            scores["probe"] = {
                "test": score_baseline(task, preds, y["test"], labels),
                "chosen": chosen,
                "seconds": time.perf_counter() - t0,
                "train_rows": len(sample),
            }
            test_predictions["probe"] = preds.tolist()
        if "cosine" in kinds:
            line, cos = fit_cosine(pair_vectors, y_probe["train"])
            preds = line.predict(cos["test"])
            scores["cosine"] = {
                "test": score_baseline(task, preds, y["test"], labels),
                "chosen": {},
                "seconds": embed_seconds,
                "train_rows": len(sample),
            }
            test_predictions["cosine"] = preds.tolist()
    seconds = time.perf_counter() - started
    write_json(out / "metrics.json", {"metric": metric, "seconds": seconds, "baselines": scores})
    predictions = write_parquet(pd.DataFrame(test_predictions), out / "test_predictions.parquet")
    for name, s in scores.items():
        log.info(
            "baseline %s: test %s %.4f (%.1f s, %d train rows)",
            name,
            metric,
            s["test"][metric],
            s["seconds"],
            s["train_rows"],
        )
    return BaselineResult(
        dir=str(out), metric=metric, scores=scores, predictions=predictions, seconds=seconds, onnx=onnx
    )


def blends(cfg: PipelineConfig, train: pd.DataFrame) -> bool:
    """Whether model.blend may mix the bag of words into this model: auto, single-label, single texts."""
    if cfg.model.blend != "auto":
        return False
    if not kind_of(cfg.data.task).is_single_label or "text_pair" in train.columns:
        log.info("model.blend auto: only single-text, single-label classifiers are blended; this model serves alone")
        return False
    return True


def compare_with_baselines(
    baselines: BaselineResult,
    task: str,
    model_predictions: list,
    references: list,
    labels: list[str] | None,
    model_name: str = "fine-tuned",
) -> dict[str, Any] | None:
    """The model against the best baseline on the same test rows: scores, the paired difference and its interval.

    `beats` is True when the whole 95% interval of (model - best baseline) lies on the better side of 0.
    None when no baseline ran. model_name: what serves, as the table and the verdict name it (a blend says so).
    """
    if not baselines.scores or baselines.predictions is None:
        return None
    metric = baselines.metric
    sign = 1.0 if greater_is_better(metric) else -1.0
    best = max(baselines.scores, key=lambda k: sign * baselines.scores[k]["test"][metric])
    best_preds = read_frame(baselines.predictions)[best].tolist()
    if not fits_values(task):  # class ids, or multi-label 0/1 rows (Parquet gives them back as arrays)
        best_preds = np.asarray([np.asarray(p) for p in best_preds], dtype=np.int64).tolist()
    model_score = compute_metrics_for(task, model_predictions, references, labels)[metric]
    k = len(labels or []) or 2
    if len(references) > 1:
        low, high = paired_difference_interval(task, metric, model_predictions, best_preds, references, k)
    else:
        low = high = float("nan")
    difference = model_score - baselines.scores[best]["test"][metric]
    beats = bool(low > 0 if sign > 0 else high < 0)
    return {
        "metric": metric,
        "best_baseline": best,
        "best_baseline_score": baselines.scores[best]["test"][metric],
        "model_score": model_score,
        "difference": difference,
        "difference_ci_low": low,
        "difference_ci_high": high,
        "beats": beats,
        "rows": len(references),
        "model": model_name,
        "text": describe_comparison(
            metric,
            best,
            baselines.scores[best]["test"][metric],
            model_score,
            low,
            high,
            beats,
            len(references),
            model_name,
        ),
    }


def describe_comparison(
    metric: str,
    best: str,
    baseline: float,
    model: float,
    low: float,
    high: float,
    beats: bool,
    rows: int,
    model_name: str = "fine-tuned",
) -> str:
    """The verdict in plain words, with what to do when the model loses."""
    who = f"The {model_name} model"
    shown = f"{metric} {model:.4f} vs {baseline:.4f} (difference {model - baseline:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] on {rows} test rows)"
    if beats:
        return f"{who} beats the best baseline ({best}): {shown}."
    return (
        f"{who} does NOT beat the best baseline ({best}) beyond its interval: {shown}. The version "
        f"is registered with beats_baseline=false and promotion refuses it unless registry.allow_below_baseline is "
        f"true. Try more optimizer updates (training.epochs or training.min_updates), model.max_length auto or "
        f"model.long_text chunk for long texts, training.strategy contrastive when classes have few rows "
        f"(single-label classification), model.blend auto (a blend with the bag of words, chosen on validation), more "
        f"labelled rows, or serve the baseline."
    )


def comparison_metrics(baselines: BaselineResult, comparison: dict[str, Any] | None) -> dict[str, float]:
    """The run's baseline metrics: each baseline's test figures on the primary metric (and accuracy), the verdict."""
    out: dict[str, float] = {}
    for name, s in baselines.scores.items():
        for key, value in s["test"].items():
            if key.split("_ci_")[0] in (baselines.metric, "accuracy"):
                out[f"baseline_{name}_test_{key}"] = float(value)
    if comparison is not None:
        out["beats_baseline"] = 1.0 if comparison["beats"] else 0.0
        for key in ("difference", "difference_ci_low", "difference_ci_high"):
            out[f"baseline_{key}"] = float(comparison[key])
    return out


def comparison_rows(baselines: BaselineResult, comparison: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per baseline, then the model: name, primary metric, its interval, train rows, seconds."""
    metric = baselines.metric
    rows = [
        {
            "model": name,
            "metric": metric,
            "value": s["test"][metric],
            "ci_low": s["test"].get(f"{metric}_ci_low"),
            "ci_high": s["test"].get(f"{metric}_ci_high"),
            "train_rows": s["train_rows"],
            "seconds": s["seconds"],
        }
        for name, s in baselines.scores.items()
    ]
    if comparison is not None:
        rows.append(
            {
                "model": comparison.get("model", "fine-tuned"),
                "metric": metric,
                "value": comparison["model_score"],
                "ci_low": None,
                "ci_high": None,
                "train_rows": None,
                "seconds": None,
            }
        )
    return rows


def comparison_markdown(baselines: BaselineResult, comparison: dict[str, Any] | None) -> str:
    """The baselines beside the model as a markdown table, then the verdict in words; empty when none ran."""
    if not baselines.scores:
        return ""

    def interval(r: dict) -> str:
        return f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]" if r["ci_low"] is not None else ""

    lines = [f"| model | test {baselines.metric} | 95% interval | train rows | seconds |", "|---|---|---|---|---|"]
    for r in comparison_rows(baselines, comparison):
        rows = "" if r["train_rows"] is None else str(r["train_rows"])
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['model']} | {r['value']:.4f} | {interval(r)} | {rows} | {secs} |")
    if comparison is not None:
        lines += ["", comparison["text"]]
    return "\n".join(lines)
