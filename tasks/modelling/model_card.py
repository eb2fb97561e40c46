"""The model card: the README.md that travels in the model folder (data, metrics, hyperparameters,
calibration and decision, intended use, limitations)."""

from __future__ import annotations

from pathlib import Path

from tasks.bundle import read_meta
from tasks.config import PipelineConfig
from tasks.inference.decode import describe_rule
from tasks.io import write_text
from tasks.kinds import kind_of
from tasks.labels import entity_types
from tasks.results import CleanResult


def long_text_note(cfg: PipelineConfig) -> str:
    """How the model reads inputs longer than max_length, for the model card."""
    m = cfg.model
    if m.long_text == "chunk":
        return (
            f"longer inputs are read in windows of {m.max_length} tokens sharing {m.window_stride()}, "
            f"their logits aggregated by {m.aggregate}"
        )
    return f"longer inputs are truncated at {m.max_length} tokens"


def write_model_card(
    model_dir: Path,
    cfg: PipelineConfig,
    data: CleanResult,
    metrics: dict,
    source: str,
    weak_text: str,
    baselines_text: str = "",
    decision: dict | None = None,
) -> str:
    """The model's README: data, metrics, baselines, hyperparameters, intended use, limitations; `weak_text`
    names the weak classes (or says there are none), `baselines_text` compares the model with the baselines,
    `decision` is evaluation's decision record (calibration and threshold)."""
    rows = "\n".join(
        f"| {k} | {v:.4f} |"
        for k, v in sorted(metrics.items())
        if isinstance(v, float) and not k.startswith("support_")
    )
    meta = read_meta(model_dir).as_dict()
    # The values training used (a search may have changed them), else the config's.
    hp = cfg.training.model_copy(update=meta.get("training") or {})
    task = cfg.data.task
    kind = kind_of(task)
    labels = data.labels
    if kind.is_token_level:
        assert labels is not None, "NER has a tag set (None only for regression)"
        labels = sorted(entity_types(labels))
    weak_section = f"## Weak classes\n{weak_text}\n\n" if kind.has_labels else ""
    baselines_section = f"## Against cheap baselines (same splits)\n{baselines_text}\n\n" if baselines_text else ""
    card = f"""# {cfg.registry.model_name}

Fine-tuned by finetune-flow from `{cfg.model.name}` for **{task}**.

## Data
- Source: `{source}`; content digest `{data.digest}`
- Rows (train / validation / test): {data.report["rows_out"]}
- Quarantined by cleaning: {data.report["quarantined"]} ({data.report["removed"]})
- {f"{kind.target_noun}: " + (str(labels) if kind.has_labels else "a number")}

## Test metrics
| metric | value |
|---|---|
{rows}

{weak_section}{baselines_section}## Hyperparameters
learning rate {hp.learning_rate}, batch {hp.train_batch_size} x {hp.gradient_accumulation_steps} accumulation,
epochs {hp.epochs}, weight decay {hp.weight_decay}, warm-up {hp.warmup_ratio}, schedule {hp.scheduler},
optimiser {hp.optimizer}, loss {hp.loss}, seed {hp.seed}, max length {cfg.model.max_length}
{"(NER labels on every sub-token)" if cfg.model.label_all_subtokens and kind.is_token_level else ""}; config digest `{cfg.digest()}`.

{decision_card(decision)}## Intended use
{kind.intended_use}

## Limitations
Scores hold for text like the test split only; {long_text_note(cfg)};
the model inherits the biases of its pretrained body and of the training data. Check the worst errors
(`evaluation/worst_errors.csv` in the run) before relying on it.
"""
    return write_text(Path(model_dir) / "README.md", card)


def decision_card(record: dict | None) -> str:
    """The model card's section on calibration and the decision threshold (empty for regression and NER)."""
    if record is None:
        return ""
    v, t = record["validation"], record["test"]
    per_label = record.get("thresholds") is not None
    if per_label:  # multi-label: a scale, a bias and a threshold per label
        how = (
            f"- Platt scaling per label (a scale and a bias, the log-loss minimum on {v['rows']} validation rows): "
            "served probabilities are sigmoid(scale x logit + bias), each label decided on its own"
            if record["calibration"] == "temperature"
            else "- No calibration (decision.calibration: none): served probabilities are the plain sigmoid"
        )
    elif record["calibration"] == "temperature":
        how = (
            f"- Temperature {record['temperature']:.4f} (the NLL minimum on {v['rows']} validation rows): served "
            f"probabilities are softmax(logits / {record['temperature']:.4f})"
        )
    else:
        how = "- Temperature 1 (decision.calibration: none): served probabilities are the plain softmax"
    lines = [
        "## Calibration and decision",
        how,
        f"- Expected calibration error (15 bins), before / after: validation {v['ece_before']:.4f} / "
        f"{v['ece_after']:.4f}; test {t['ece_before']:.4f} / {t['ece_after']:.4f}"
        + (
            f" (a perfectly calibrated model would show about {t['ece_floor']:.4f} on {t['rows']} rows: sampling alone)"
            if "ece_floor" in t
            else ""
        ),
        f"- Threshold: {describe_rule(record)}",
    ]
    if per_label:
        lines += ["", "| label | threshold | validation precision | recall | F1 |", "|---|---|---|---|---|"]
        lines += [
            f"| {p['label']} | {thr:.4g} | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} |"
            for p, thr in zip(record["per_label"], record["thresholds"])
        ]
    if record["threshold"] is not None:
        lines.append(
            f"  - '{record['positive_label']}' is answered when its probability is >= "
            f"{record['threshold']:.6g}; on validation precision {v['precision']:.4f}, recall "
            f"{v['recall']:.4f}{'' if v['target_met'] else ' (target NOT reached)'}"
        )
    return "\n".join(lines) + "\n\n"
