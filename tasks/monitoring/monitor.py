"""One monitor run: a window of logged traffic against the champion's held-out data, recorded in MLflow.

Plain function; flows/monitor.py wraps it as the `monitor` flow, publishes the Prefect artifact and
emits the retrain event when `retrain` is true.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import MonitoringConfig
from tasks.io import read_frame, write_text
from tasks.kinds import kind_of
from tasks.kinds.multi_label import label_set_text
from tasks.monitoring.drift import compare_windows, tokenizer_vocabulary
from tasks.monitoring.report import plot_distributions, report_markdown, write_html_report
from tasks.platform import tracking
from tasks.registry import register
from tasks.registry.holdout import HELD_OUT_ARTIFACT, load_candidate

MONITORING_EXPERIMENT = "monitoring"
CHAMPION = "champion"


def load_reference(candidate: dict, workdir: Path, rows: int, seed: int) -> pd.DataFrame:
    """The champion run's held-out split (a sample), scored by the champion: text, prediction, confidence."""
    # heavy (pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.monitoring.monitor stays light
    from tasks.inference.predictor import OnnxPredictor

    local = tracking.download_run_artifact(candidate["run_id"], HELD_OUT_ARTIFACT, workdir / "reference")
    df = read_frame(local)
    if len(df) > rows:
        df = df.sample(rows, random_state=seed)
    kind = kind_of(candidate["meta"]["task"])
    if kind.is_token_level:  # no per-text label to compare; the words are still the input
        return pd.DataFrame({"text": [" ".join(t) for t in df["tokens"]]})
    predictor = OnnxPredictor(candidate["bundle"])
    texts = df["text"].astype(str).tolist()
    pairs = df["text_pair"].astype(str).tolist() if "text_pair" in df else None
    answers = []
    for i in range(0, len(texts), 64):
        answers += predictor.predict(texts[i : i + 64], pairs[i : i + 64] if pairs else None)
    if kind.predicts_value:
        return pd.DataFrame({"text": texts, "prediction": [a["value"] for a in answers], "confidence": np.nan})
    if kind.is_multi_label:
        predictions = [label_set_text(a["labels"]) for a in answers]
        return pd.DataFrame({"text": texts, "prediction": predictions, "confidence": np.nan})
    if not kind.is_single_label:
        raise kind.unsupported("drift reference")
    return pd.DataFrame(
        {"text": texts, "prediction": [a["label"] for a in answers], "confidence": [a["score"] for a in answers]}
    )


def feedback_quality(window: pd.DataFrame, task: str, location: str | None = None) -> dict:
    """Accuracy (classification) or MAE (regression) of the logged predictions that have corrected labels."""
    # heavy (pyarrow via tasks.monitoring.feedback): loaded when this runs, so importing tasks.monitoring.monitor stays light
    from tasks.monitoring.feedback import join_feedback

    rows = join_feedback(window, location)
    out: dict = {"rows": len(rows), "accuracy": None, "mae": None}
    if rows.empty:
        return out
    kind = kind_of(task)
    if kind.predicts_value:
        out["mae"] = float(np.mean(np.abs(rows["prediction"].astype(float) - rows["label"].astype(float))))
    elif kind.is_single_label or kind.is_token_level or kind.is_multi_label:  # logged answer vs the corrected one
        out["accuracy"] = float((rows["prediction"].astype(str) == rows["label"].astype(str)).mean())
    else:
        raise kind.unsupported("feedback quality")
    return out


def monitor_model(
    model_name: str,
    settings: MonitoringConfig | None = None,
    now: dt.datetime | None = None,
    location: str | None = None,
    extra_tags: dict | None = None,
) -> dict:
    """Compare the last `window_hours` of `model_name`'s logged traffic with its champion's data; log an MLflow run.

    Returns the verdict: status, reasons, whether a retrain is asked for, the drift tests, feedback quality.
    """
    # heavy (pyarrow via tasks.monitoring.prediction_log): loaded when this runs, so importing tasks.monitoring.monitor stays light
    from tasks.monitoring.prediction_log import read_log_losses, read_predictions

    s = settings or MonitoringConfig()
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(hours=s.window_hours)
    window = read_predictions(start, end, model_name, location)
    # Shadow (challenger) and canary rows answer the same or a diverted share of requests: the champion's
    # rows alone are the traffic its data is compared with.
    window = window[window["role"] == CHAMPION].reset_index(drop=True)
    if register.version_by_alias(model_name, CHAMPION) is None:
        raise ValueError(
            f"model '{model_name}' has no '{CHAMPION}' version to compare traffic with; promote one "
            f"first (ftflow promote {model_name}) or check the name (MLflow UI, Models)"
        )
    with tempfile.TemporaryDirectory(prefix="ftflow-monitor-") as tmp:
        workdir = Path(tmp)
        champion = load_candidate(model_name, CHAMPION, workdir)
        assert champion is not None, f"'{model_name}' had a '{CHAMPION}' version a moment ago"
        task = champion["meta"]["task"]
        result = {
            "model_name": model_name,
            "champion_version": champion["version"],
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "rows": len(window),
            # Answers the service could not log in this window (a full disk past its memory bound, a full queue):
            # the drift tests saw `rows` of rows + log_rows_lost answers.
            "log_rows_lost": read_log_losses(start, end, model_name, location),
            "experiment": MONITORING_EXPERIMENT,
            "drift": None,
            "reasons": [],
            "retrain": False,
        }
        drift = None
        reference = None
        if len(window) >= s.min_rows:
            reference = load_reference(champion, workdir, s.reference_rows, s.seed)
            current = window[["text", "prediction", "confidence"]]
            if kind_of(task).is_token_level:  # a sentence's answer is its entities: no one label to compare
                current = current.drop(columns=["prediction", "confidence"])
            vocabulary, lowercase = tokenizer_vocabulary(champion["bundle"])
            drift = compare_windows(
                reference, current, vocabulary, lowercase, s.p_value, s.embedding_rows, s.permutations, s.seed, task
            )
            result["drift"] = drift.as_dict()
            result["reasons"] += drift.reasons
        feedback = feedback_quality(window, task, location)
        result["feedback"] = feedback
        if (
            feedback["accuracy"] is not None
            and feedback["rows"] >= s.min_feedback_rows
            and feedback["accuracy"] < s.min_feedback_accuracy
        ):
            result["reasons"].append(
                f"feedback accuracy {feedback['accuracy']:.3f} < {s.min_feedback_accuracy} on {feedback['rows']} rows"
            )
        result["status"] = (
            "not_enough_data"
            if drift is None and not result["reasons"]
            else "retrain_needed"
            if result["reasons"]
            else "ok"
        )
        result["retrain"] = bool(result["reasons"]) and s.retrain_on_drift

        run_id = tracking.start_run(
            MONITORING_EXPERIMENT,
            f"monitor-{model_name}-{end:%Y%m%d-%H%M%S}",
            tags={
                "model_name": model_name,
                "champion_version": champion["version"],
                "status": result["status"],
                "retrain_requested": str(result["retrain"]).lower(),
                **(extra_tags or {}),
            },
        )
        result["run_id"] = run_id
        with tracking.ended_run(run_id):
            tracking.log_params(
                run_id,
                {f"monitoring.{k}": v for k, v in s.model_dump().items()}
                | {"window_start": result["window_start"], "window_end": result["window_end"]},
            )
            metrics = {
                "rows_window": float(len(window)),
                "retrain_requested": float(result["retrain"]),
                "feedback_rows": float(feedback["rows"]),
                "log_rows_lost": float(result["log_rows_lost"]),
            }
            metrics |= {f"feedback_{k}": v for k, v in feedback.items() if k != "rows" and v is not None}
            metrics |= drift.metrics() if drift else {}
            tracking.log_metrics(run_id, metrics)
            out = workdir / "monitor"
            out.mkdir()
            plot = plot_distributions(reference, window, out / "distributions.png") if reference is not None else None
            write_html_report(result, drift, plot, out / "report.html")
            write_text(out / "monitor.json", json.dumps(result, indent=2, default=str))
            write_text(out / "report.md", report_markdown(result))
            tracking.log_artifact(run_id, out)
    return result
