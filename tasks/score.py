"""Batch scoring: a registered model answers every row of a file or SQL query, written as Parquet.

The plain steps of the `score` flow (flows/score.py): resolve the model reference, read and check
the input (all before any worker starts, so bad input is one clear error), cut the rows into
length-sorted shards of whole batches, score a shard (on a Dask worker; the bundle loads once per
worker process), assemble the output and write it atomically, and record the run in MLflow.

Rows are sorted by token length and cut into shards of whole batches, so padding stays small; every row
is answered by the same inference core (tasks/inference/predictor.py) the export gate scored the serving
file with, and an answer does not depend on its batch (a dynamic int8 graph runs one row per call), so a
labelled input scores exactly the metric the gate recorded for the serving file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from tasks.bundle import read_meta
from tasks.config import SourceConfig, TrainingConfig
from tasks.data.readers import DataSourceError
from tasks.data.sources import cache_dir, describe_source, read_source
from tasks.io import digest_frames
from tasks.kinds import kind_of
from tasks.kinds.multi_label import multi_hot
from tasks.labels import LabelSetError
from tasks.modelling.metrics import compute_metrics_for
from tasks.platform import tracking
from tasks.registry import register
from tasks.registry.holdout import check_columns as check_labels
from tasks.secrets import expand_references, literals_as_references, redact_text

SCORING_EXPERIMENT = "scoring"
# The export gate's batch size: scoring a labelled test split at it reproduces the gate's metric.
DEFAULT_BATCH_SIZE: int = TrainingConfig.model_fields["eval_batch_size"].default
DEFAULT_SHARD_ROWS = 4096
ADDED_COLUMNS = ("prediction", "confidence", "probabilities", "truncated", "model_version")


class ScoreInputError(ValueError):
    """The model reference or the input cannot be scored; the message says how to fix it."""


@dataclass(frozen=True)
class ModelRef:
    """One registered model version, and how the user named it."""

    name: str
    version: str
    alias: str | None
    run_id: str
    source: str

    @property
    def label(self) -> str:
        return (
            f"{self.name}@{self.alias} (version {self.version})"
            if self.alias
            else f"{self.name} version {self.version}"
        )


@dataclass(frozen=True)
class ScorePlan:
    """Everything checked before any worker starts: model, bundle, input rows and their shards."""

    model: ModelRef
    bundle_dir: str
    task: str
    labels: list[str] | None
    frame: pd.DataFrame
    texts: list[str]
    pairs: list[str] | None
    references: pd.Series | None
    origin: str
    digest: str
    shards: list[np.ndarray]  # row positions per shard, shortest rows first
    batch_size: int


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """NAME (the champion), NAME@ALIAS or NAME/VERSION -> (name, alias, version)."""
    ref = ref.strip()
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    elif m := re.fullmatch(r"(.+)/(\d+)", ref):
        return m.group(1), None, m.group(2)
    elif ref:
        return ref, register.CHAMPION, None
    raise ScoreInputError(
        f"model reference {ref!r} is not NAME, NAME@ALIAS or NAME/VERSION "
        f"(e.g. quickstart-sentiment@challenger or quickstart-sentiment/3)"
    )


def resolve_model(ref: str) -> ModelRef:
    """The registry version a reference names; unknown models, aliases and versions say what exists."""
    name, alias, version = parse_model_ref(ref)
    aliases = register.model_aliases(name)
    if aliases is None:
        known = register.registered_names()
        raise ScoreInputError(
            f"no registered model '{name}' in the MLflow registry at {tracking.shown_tracking_uri()}; "
            f"registered models: {known or 'none'}. Train one with `ftflow run CONFIG`, or set "
            f"MLFLOW_TRACKING_URI to the registry that holds it"
        )
    if alias is not None:
        if alias not in aliases:
            have = ", ".join(f"{a} -> version {v}" for a, v in sorted(aliases.items())) or "none"
            hint = f"promote one with `ftflow promote {name}`, or " if alias == register.CHAMPION else ""
            raise ScoreInputError(
                f"model '{name}' has no alias '{alias}' (aliases: {have}); {hint}name a version "
                f"as {name}/VERSION or an existing alias as {name}@ALIAS"
            )
        version = aliases[alias]
    assert version is not None, "parse_model_ref gives an alias or a version"
    try:
        mv = register.get_version(name, version)
    except ValueError as e:
        raise ScoreInputError(str(e)) from None
    return ModelRef(name=name, version=str(mv.version), alias=alias, run_id=mv.run_id or "", source=mv.source)


INPUT_REFERENCE_PREFIX = "FTFLOW_SCORE_INPUT"


def input_by_reference(input: str) -> tuple[str, dict[str, str]]:
    """(the input with a URL's literal credentials as `${FTFLOW_SCORE_INPUT_...}` references, their values).

    `ftflow score` exports the values in its own process and passes the references to the flow: Prefect
    stores a flow run's parameters as given, so a password passed as a value would sit in its database.
    """
    if "://" not in input:
        return input, {}
    return literals_as_references(input, INPUT_REFERENCE_PREFIX)


def input_source(input: str, query: str | None = None, format: str | None = None) -> SourceConfig:
    """A file source (file, glob or folder) for a path, or a SQL source for a SQLAlchemy URL with a query.

    A password in the URL goes in a `${ENV}` reference (e.g. postgresql://reader:${DB_PASSWORD}@host/db),
    expanded only when the rows are read; every message here shows the URL masked.
    """
    expand_references(input, "--input")  # an unset variable is refused now, before any model is fetched
    shown = redact_text(input)
    if query:
        if "://" not in input:
            raise ScoreInputError(
                f"--query needs a SQLAlchemy connection URL as the input (e.g. sqlite:///data.db), not {shown!r}"
            )
        return SourceConfig(kind="sql", connection=input, query=query)
    if "://" in input:
        raise ScoreInputError(
            f"input {shown!r} looks like a database URL: give the rows to score with --query 'SELECT ...'"
        )
    return SourceConfig(kind="file", path=input, format=format)


def read_input(src: SourceConfig) -> tuple[pd.DataFrame, str]:
    """The rows to score and a one-line description of where they came from; an empty input is refused."""
    try:
        df = read_source(src)
    except DataSourceError as e:  # the SQL source's advice names config fields; here they are options
        said = str(e).replace("data.source.connection", "--input").replace("data.source.query", "--query")
        raise ScoreInputError(said) from None
    origin = describe_source(src)  # lineage names the database, never its password
    if src.kind == "sql":
        origin = f"{origin} {src.query}"
    if df.empty:
        raise ScoreInputError(f"the input {origin} holds no rows; nothing to score")
    return df.reset_index(drop=True), origin


def bundle_cache(model: ModelRef) -> Path:
    """Where this machine keeps a version's serving bundle (versions are immutable; the source names it)."""
    key = hashlib.sha256(model.source.encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model.name)
    return cache_dir() / "bundles" / f"{safe}-v{model.version}-{key}"


def fetch_bundle(model: ModelRef) -> Path:
    """The version's serving bundle on this machine, downloaded from the registry once."""
    target = bundle_cache(model)
    if (target / "finetune_flow.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=target.parent, prefix=".part-")
    try:
        register.download_bundle(model.name, model.version, tmp)
        os.rename(tmp, target)  # whole or not at all
    except OSError:
        if not (target / "finetune_flow.json").exists():  # else another process won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_columns(
    df: pd.DataFrame,
    task: str,
    labels: list[str] | None,
    origin: str,
    text_column: str,
    text_pair_column: str | None,
    label_column: str | None,
) -> None:
    """Refuse an input the model cannot answer: missing columns, empty texts, clashing output names."""
    present = list(df.columns)
    needed = [c for c in (text_column, text_pair_column) if c]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ScoreInputError(
            f"column(s) {missing} not found in {origin}; columns present: {present}. "
            f"Name the text column with --text-column (and the second text with --text-pair-column)"
        )
    kind = kind_of(task)
    if kind.reads_pairs and not text_pair_column:
        raise ScoreInputError(
            f"this model classifies text pairs: name the second text's column of {origin} with "
            f"--text-pair-column (columns present: {present})"
        )
    if label_column and label_column not in df.columns:
        raise ScoreInputError(f"label column '{label_column}' not found in {origin}; columns present: {present}")
    clash = [c for c in ADDED_COLUMNS if c in df.columns]
    if clash:
        raise ScoreInputError(f"{origin} already has column(s) {clash}, which the output adds; rename them first")
    for col in needed:
        blank = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if blank.any():
            rows = list(df.index[blank][:5])
            raise ScoreInputError(
                f"{int(blank.sum())} row(s) of {origin} have no text in column '{col}' (rows {rows}"
                f"{'...' if blank.sum() > 5 else ''}); drop or fill them before scoring"
            )
    if label_column:
        view = df[[text_column, label_column]].rename(columns={text_column: "text", label_column: "label"})
        view["label"] = targets_as_read(view["label"], task, labels)
        if text_pair_column:
            view["text_pair"] = df[text_pair_column]
        try:
            check_labels(view, task, origin, labels)
        except ValueError as e:
            raise ScoreInputError(
                f"{e}; the labels are only compared with the predictions: drop or rename "
                f"the column '{label_column}' to score without them"
            ) from None


def targets_as_read(column: pd.Series, task: str, labels: list[str] | None) -> pd.Series:
    """An input's label column as the model's references read it: class names, label sets, or values as given."""
    try:
        return kind_of(task).read_targets(column, labels, origin="the scoring input")
    except LabelSetError as e:
        raise ScoreInputError(str(e)) from None


def texts_of(df: pd.DataFrame, column: str) -> list[str]:
    """A column's texts; NER tokens stored as lists are joined with spaces, as the pyfunc model does."""
    return [" ".join(map(str, v)) if isinstance(v, (list, tuple, np.ndarray)) else str(v) for v in df[column]]


def plan_shards(lengths: np.ndarray, batch_size: int, shard_rows: int) -> list[np.ndarray]:
    """Row positions sorted by token length (so each batch holds little padding), cut into shards of whole batches."""
    order = np.argsort(lengths, kind="stable")
    per_shard = max(1, shard_rows // batch_size) * batch_size
    return [order[i : i + per_shard] for i in range(0, len(order), per_shard)]


def prepare_scoring(
    model_ref: str,
    src: SourceConfig,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> ScorePlan:
    """Resolve the model, read and check the input, and plan the shards: every refusal happens here."""
    # heavy (pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.score stays light
    from tasks.inference.predictor import load_tokenizer

    if batch_size < 1 or shard_rows < 1:
        raise ScoreInputError(f"batch size ({batch_size}) and shard rows ({shard_rows}) must be at least 1")
    model = resolve_model(model_ref)
    df, origin = read_input(src)
    if label_column is None and "label" in df.columns:
        label_column = "label"  # a labelled input is scored against its labels too
    bundle = fetch_bundle(model)
    meta = read_meta(bundle).as_dict()
    task, labels = meta["task"], meta["labels"]
    kind = kind_of(task)
    if kind.is_token_level:
        label_column = None  # NER answers are entity spans; word tags are scored by the training flow
    if kind.reads_pairs and text_pair_column is None and "text_pair" in df.columns:
        text_pair_column = "text_pair"  # a run's own data/clean/*.parquet names it so
    check_columns(df, task, labels, origin, text_column, text_pair_column if kind.reads_pairs else None, label_column)
    texts = texts_of(df, text_column)
    pairs = None
    if kind.reads_pairs:
        assert text_pair_column is not None, "check_columns refuses a pair model without a second text column"
        pairs = texts_of(df, text_pair_column)
    tokenizer = load_tokenizer(bundle, meta["max_length"])
    # Without offsets (not needed for a length): a third faster over 100,000 texts.
    encodings = tokenizer.encode_batch_fast(list(zip(texts, pairs)) if pairs else texts)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    references = None
    if label_column:
        references = targets_as_read(df[label_column], task, labels)
    return ScorePlan(
        model=model,
        bundle_dir=str(bundle),
        task=task,
        labels=labels,
        frame=df,
        texts=texts,
        pairs=pairs,
        references=references,
        origin=origin,
        digest=digest_frames({"input": df}),
        shards=plan_shards(lengths, batch_size, shard_rows),
        batch_size=batch_size,
    )


# --- on the workers ---------------------------------------------------------------------------------

_PREDICTORS: dict[tuple, object] = {}
_LOAD_LOCK = threading.Lock()


def load_predictor(model: ModelRef, bundle_dir: str, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
    """This process's predictor for a model version: loaded on first use, then kept (one per worker)."""
    # heavy (pyarrow via tasks.inference.predictor): loaded when this runs, so importing tasks.score stays light
    from tasks.inference.predictor import OnnxPredictor

    key = (model.name, model.version, model.source, threads, batch_size)
    with _LOAD_LOCK:
        if key not in _PREDICTORS:
            # The driver's bundle folder when this worker shares its disk, else a download from the registry.
            local = Path(bundle_dir)
            folder = local if (local / "finetune_flow.json").exists() else fetch_bundle(model)
            _PREDICTORS[key] = OnnxPredictor(folder, threads=threads, batch_size=batch_size)
        return _PREDICTORS[key]


def score_shard(
    model: ModelRef,
    bundle_dir: str,
    texts: list[str],
    pairs: list[str] | None,
    batch_size: int,
    threads: int | None = None,
) -> list[dict]:
    """The predictor's answers for one shard's rows, batch_size rows per call, in the order given."""
    predictor = load_predictor(model, bundle_dir, threads, batch_size)
    answers: list[dict] = []
    for i in range(0, len(texts), batch_size):
        answers += predictor.predict(texts[i : i + batch_size], pairs[i : i + batch_size] if pairs else None)
    return answers


# --- back on the driver -----------------------------------------------------------------------------


def assemble_output(plan: ScorePlan, answers: list[dict]) -> pd.DataFrame:
    """The input columns plus prediction, confidence and probabilities (classifiers), truncated, model_version."""
    out = plan.frame.copy()
    kind = kind_of(plan.task)
    if kind.predicts_value:
        out["prediction"] = [a["value"] for a in answers]
    elif kind.is_token_level:
        out["prediction"] = [a["entities"] for a in answers]
    elif kind.is_single_label:
        out["prediction"] = [a["label"] for a in answers]
        out["confidence"] = np.array([a["score"] for a in answers], dtype=np.float64)
        out["probabilities"] = [a["scores"] for a in answers]
    elif kind.is_multi_label:  # the chosen labels as a list, every label's probability beside them
        out["prediction"] = [a["labels"] for a in answers]
        out["probabilities"] = [a["scores"] for a in answers]
    else:
        raise kind.unsupported("batch scoring output")
    out["truncated"] = [bool(a["truncated"]) for a in answers]
    out["model_version"] = plan.model.version
    return out


def gather_answers(plan: ScorePlan, shard_answers: list[list[dict]]) -> list[dict]:
    """Each shard's answers put back in input row order."""
    answers: list[dict | None] = [None] * len(plan.texts)
    for rows, got in zip(plan.shards, shard_answers):
        if len(got) != len(rows):
            raise RuntimeError(f"a shard of {len(rows)} rows came back with {len(got)} answers")
        for i, a in zip(rows, got):
            answers[int(i)] = a
    # No slot is None: plan_shards puts every row in one shard, and each shard's answers were counted above.
    return cast(list[dict], answers)


def write_output(df: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet atomically: readers see the old file or the whole new one, never a part."""
    path = Path(path).resolve()
    if path.suffix != ".parquet":
        raise ScoreInputError(f"output '{path}' must be a .parquet file")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def labelled_metrics(plan: ScorePlan, out: pd.DataFrame) -> dict[str, float]:
    """The task metrics of the predictions against the input's labels (classifiers and regression)."""
    if plan.references is None:
        return {}
    kind = kind_of(plan.task)
    if kind.predicts_value:
        preds, refs = list(out["prediction"]), [float(v) for v in plan.references]
    elif kind.is_single_label:
        assert plan.labels is not None, "a classifier has a label set (None only for regression)"
        index = {name: i for i, name in enumerate(plan.labels)}
        preds, refs = [index[p] for p in out["prediction"]], [index[str(v)] for v in plan.references]
    elif kind.is_multi_label:
        assert plan.labels is not None, "a multi-label model has a label set"
        preds = multi_hot(list(out["prediction"]), plan.labels).tolist()
        refs = multi_hot(list(plan.references), plan.labels).tolist()
    else:
        raise kind.unsupported("labelled batch metrics")
    return compute_metrics_for(plan.task, preds, refs, plan.labels)


def open_scoring_run(plan: ScorePlan, output: str, engine: str, extra_tags: dict | None = None) -> str:
    """The scoring run in the `scoring` experiment, with the input's digest and the model version as lineage."""
    m = plan.model
    run_name = f"{m.name}-v{m.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {
        "model_name": m.name,
        "model_version": m.version,
        "model_alias": m.alias or "",
        "model_source": m.source,
        "model_run_id": m.run_id,
        "input_source": plan.origin,
        "input_digest": plan.digest,
        "output": str(Path(output).resolve()),
        "dask": engine,
        **(extra_tags or {}),
    }
    run_id = tracking.start_run(SCORING_EXPERIMENT, run_name, tags={k: str(v) for k, v in tags.items()})
    tracking.log_params(
        run_id,
        {
            "model": m.label,
            "task": plan.task,
            "rows": len(plan.texts),
            "shards": len(plan.shards),
            "batch_size": plan.batch_size,
            "dask": engine,
        },
    )
    tracking.log_dataset_input(
        run_id, plan.frame, name="scoring-input", source=plan.origin, digest=plan.digest, context="scoring"
    )
    return run_id


def finish_scoring(plan: ScorePlan, shard_answers: list[list[dict]], output: str, run_id: str, seconds: float) -> dict:
    """Assemble and write the output, score it against labels when the input has them, log it all."""
    out = assemble_output(plan, gather_answers(plan, shard_answers))
    path = write_output(out, output)
    metrics = labelled_metrics(plan, out)
    speed = {"rows": len(out), "seconds": seconds, "texts_per_second": len(out) / max(seconds, 1e-9)}
    tracking.log_metrics(run_id, {**speed, **{f"input_{k}": v for k, v in metrics.items()}})
    tracking.set_tags(run_id, {"output_rows": len(out)})
    return {
        "output": str(path),
        "rows": len(out),
        "model": plan.model.label,
        "model_version": plan.model.version,
        "metrics": metrics,
        "run_id": run_id,
        "seconds": seconds,
        "texts_per_second": speed["texts_per_second"],
        "input_digest": plan.digest,
    }
