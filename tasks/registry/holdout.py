"""Scoring both models of a promotion: each version's serving bundle, the held-out frame they share, the metrics.

Stored metrics are never compared: each model is re-scored, with the ONNX file it serves, on the
SAME data: the challenger run's held-out split (`data/test.parquet` artifact) or a pinned
evaluation set.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.bundle import read_meta
from tasks.io import read_frame
from tasks.kinds import kind_of
from tasks.modelling.predict import metrics_of
from tasks.platform import tracking
from tasks.registry import register

HELD_OUT_ARTIFACT = "data/test.parquet"


def load_version(name: str, version: str, workdir: Path, role: str) -> dict:
    """One version with its serving bundle downloaded."""
    mv = register.get_version(name, version)
    bundle = register.download_bundle(name, mv.version, workdir / f"{role}-v{mv.version}")
    return {
        "version": str(mv.version),
        "run_id": mv.run_id,
        "tags": dict(mv.tags),
        "bundle": bundle,
        "meta": read_meta(bundle).as_dict(),
    }


def load_candidate(name: str, alias: str, workdir: Path) -> dict | None:
    """The version holding `alias` with its serving bundle downloaded, or None when the alias is unset."""
    mv = register.version_by_alias(name, alias)
    return None if mv is None else load_version(name, str(mv.version), workdir, alias)


def read_eval_frame(eval_data: str | None, challenger_run_id: str, workdir: Path) -> tuple[pd.DataFrame, str]:
    """The held-out frame both models are scored on, and where it came from."""
    if eval_data:
        path = Path(eval_data)
        if not path.exists():
            raise ValueError(
                f"evaluation set '{eval_data}' does not exist; give a parquet, csv or jsonl file "
                f"with the columns of a run's data/clean/test.parquet"
            )
        readers = {".parquet": read_frame, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True)}
        if path.suffix not in readers:
            raise ValueError(f"evaluation set '{eval_data}': unknown format '{path.suffix}'; use {', '.join(readers)}")
        return readers[path.suffix](path), str(path.resolve())
    try:
        local = tracking.download_run_artifact(challenger_run_id, HELD_OUT_ARTIFACT, workdir / "eval")
    except Exception as e:
        raise ValueError(
            f"the challenger's run {challenger_run_id} has no '{HELD_OUT_ARTIFACT}' artifact ({e}); "
            f"pass a pinned evaluation set: ftflow promote NAME --eval-data PATH"
        ) from None
    return read_frame(local), f"runs:/{challenger_run_id}/{HELD_OUT_ARTIFACT}"


def check_columns(df: pd.DataFrame, task: str, where: str, labels: list[str] | None = None) -> None:
    """Refuse an evaluation set without the task's columns, without rows, or with labels the model lacks."""
    kind = kind_of(task)
    need = kind.input_columns + kind.target_columns
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(
            f"evaluation set {where} lacks column(s) {missing} for a {task} model; it has "
            f"{list(df.columns)}. Use the layout of a run's data/clean/test.parquet"
        )
    if df.empty:
        raise ValueError(f"evaluation set {where} has no rows")
    if kind.predicts_value:
        bad = df.loc[pd.to_numeric(df["label"], errors="coerce").isna(), "label"]
        if len(bad):
            raise ValueError(
                f"evaluation set {where}: {len(bad)} label(s) are not numbers (e.g. {bad.iloc[0]!r} "
                f"in row {bad.index[0]}); a regression model needs a numeric label in every row"
            )
        return
    if labels is None:
        return
    if kind.is_multi_label:  # every name of every set; an empty set is an answer, a missing cell is not
        missing = df["label"].isna().any()
        seen = pd.Series([name for names in df["label"].dropna() for name in names], dtype=object)
    else:
        seen = df["tags"].explode() if kind.is_token_level else df["label"]
        missing = seen.isna().any()
    unknown = sorted({str(v) for v in seen.dropna()} - set(labels)) + (["<empty>"] if missing else [])
    if unknown:
        raise ValueError(
            f"evaluation set {where} has label(s) {unknown[:10]} that the model does not know; its "
            f"labels are {labels}. Map the labels to these names (as in data/clean/test.parquet)"
        )


def score_bundle(bundle: Path, df: pd.DataFrame) -> dict:
    """The task metrics of a serving bundle (the ONNX file it serves) on a labelled frame, via the inference core."""
    # heavy (pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.registry.holdout stays light
    from tasks.inference.predictor import OnnxPredictor

    return metrics_of(OnnxPredictor(bundle).predict_frame(df), df)
