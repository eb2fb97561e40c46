"""Evaluate: score the trained model on the held-out test split and write the evidence.

Writes, under RUN/evaluation: metrics.json, predictions.parquet, worst_errors.csv,
per_class_report.csv and confusion_matrix.png (classification); and the model card
(README.md) into the model folder, so it travels with the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import PipelineConfig
from tasks.io import read_frame, read_json, write_json

WORST_N = 50


def load_trained(model_dir: str | Path):
    """The fine-tuned model and tokenizer from a model folder."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    meta = read_json(Path(model_dir) / "finetune_flow.json")
    cls = AutoModelForTokenClassification if meta["task"] == "ner" else AutoModelForSequenceClassification
    return cls.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir), meta


def frame_of_predictions(df: pd.DataFrame, scored: dict, task: str, labels: list[str] | None) -> pd.DataFrame:
    """The test split with prediction, confidence and correctness per row."""
    out = df.drop(columns=[c for c in ("raw_index",) if c in df.columns]).copy()
    preds, refs = scored["predictions"], scored["references"]
    if task == "regression":
        out["prediction"] = preds
        out["abs_error"] = np.abs(np.array(preds) - np.array(refs))
    elif task == "ner":
        out["prediction"] = preds
        out["correct"] = [p == r for p, r in zip(preds, refs)]
        out["confidence"] = scored["confidence"]
    else:
        out["prediction"] = [labels[p] for p in preds]
        out["correct"] = [p == r for p, r in zip(preds, refs)]
        out["confidence"] = scored["confidence"]
    return out


def worst_errors(pred: pd.DataFrame, task: str, n: int = WORST_N) -> pd.DataFrame:
    """The N most confident mistakes (largest errors for regression)."""
    if task == "regression":
        return pred.sort_values("abs_error", ascending=False).head(n)
    wrong = pred[~pred["correct"]]
    return wrong.sort_values("confidence", ascending=False).head(n)


def per_class_report(metrics: dict, labels: list[str]) -> pd.DataFrame:
    from tasks.metrics import label_keys

    rows = []
    for name, key in zip(labels, label_keys(labels)):
        rows.append({"label": name, **{m: metrics.get(f"{m}_{key}") for m in ("precision", "recall", "f1")},
                     "support": metrics.get(f"support_{key}")})
    return pd.DataFrame(rows)


def plot_confusion_matrix(refs: list[int], preds: list[int], labels: list[str], path: Path) -> str:
    """A confusion matrix PNG (rows: truth, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
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
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def write_model_card(model_dir: Path, cfg: PipelineConfig, data: dict, metrics: dict, source: str) -> str:
    """The model's README: data, metrics, hyperparameters, intended use, limitations."""
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())
                     if isinstance(v, float) and not k.startswith("support_"))
    hp = cfg.training
    card = f"""# {cfg.registry.model_name}

Fine-tuned by finetune-flow from `{cfg.model.name}` for **{cfg.data.task}**.

## Data
- Source: `{source}`; content digest `{data['digest']}`
- Rows (train / validation / test): {data['report']['rows_out']}
- Quarantined by cleaning: {data['report']['quarantined']} ({data['report']['removed']})
- Labels: {data['labels']}

## Test metrics
| metric | value |
|---|---|
{rows}

## Hyperparameters
learning rate {hp.learning_rate}, batch {hp.train_batch_size}, epochs {hp.epochs}, weight decay {hp.weight_decay},
warm-up {hp.warmup_ratio}, schedule {hp.scheduler}, optimiser {hp.optimizer}, loss {hp.loss}, seed {hp.seed},
max length {cfg.model.max_length}; config digest `{cfg.digest()}`.

## Intended use
{cfg.data.task.replace('_', ' ')} of short English texts like the training data.

## Limitations
Scores hold for text like the test split only; longer inputs are truncated at {cfg.model.max_length} tokens;
the model inherits the biases of its pretrained body and of the training data. Check the worst errors
(`evaluation/worst_errors.csv` in the run) before relying on it.
"""
    path = Path(model_dir) / "README.md"
    path.write_text(card)
    return str(path)


def evaluate_model(model_dir: str | Path, data: dict, cfg: PipelineConfig, run_dir: str | Path,
                   source: str = "") -> dict:
    """Score the model on the test split; write metrics, predictions, errors, plots and the model card."""
    from tasks.predict import score_frame, torch_forward

    model, tokenizer, meta = load_trained(model_dir)
    task, labels = cfg.data.task, data["labels"]
    test = read_frame(data["splits"]["test"])
    scored = score_frame(torch_forward(model), tokenizer, test, task, labels, cfg.model.max_length,
                         cfg.training.eval_batch_size)
    metrics = {f"test_{k}": v for k, v in scored["metrics"].items()}
    out = Path(run_dir) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    pred = frame_of_predictions(test, scored, task, labels)
    pred.to_parquet(out / "predictions.parquet", index=False)
    worst_errors(pred, task).to_csv(out / "worst_errors.csv", index=False)
    files = {"metrics": write_json(out / "metrics.json", metrics),
             "predictions": str(out / "predictions.parquet"), "worst_errors": str(out / "worst_errors.csv")}
    if task in ("classification", "pair_classification"):
        per_class_report(scored["metrics"], labels).to_csv(out / "per_class_report.csv", index=False)
        files["per_class_report"] = str(out / "per_class_report.csv")
        files["confusion_matrix"] = plot_confusion_matrix(scored["references"], scored["predictions"], labels,
                                                          out / "confusion_matrix.png")
    files["model_card"] = write_model_card(Path(model_dir), cfg, data, scored["metrics"], source)
    return {"metrics": metrics, "dir": str(out), "files": files}
