"""What the stages hand each other: small frozen records of paths, digests and summaries, never frames.

Prefect persists the data stages' results with its default (cloudpickle) serializer and caches
them on content digests (tasks/stages.py); tasks/data/cache.py rewrites their paths when a cached
result is reused in a new run folder. The JSON files the stages write beside them
(cleaning_report.json, validation/summary.json, train_summary.json, metrics.json, export_report.json)
are what people and other tools read; these records only point at them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CollectResult:
    """The collect stage's raw snapshot of every source, its content digest and what each file held."""

    path: str  # RUN/data/raw/all.parquet: every row read, in the canonical columns
    rows: int  # rows in the snapshot (unparseable lines included; clean quarantines them)
    digest: str  # content digest of the snapshot; the clean stage's cache key is made of it
    source: str  # the sources described, joined by " + "; a run tag and the model card name it
    columns: list[str]  # the snapshot's columns
    files: list[dict]  # one per file read: file, encoding, rows, unparseable_lines
    unparseable_lines: int  # lines no parser could read, over all files


@dataclass(frozen=True)
class CleanResult:
    """The clean stage's train/validation/test files, label order, report and content digest."""

    dir: str  # RUN/data/clean
    splits: dict[str, str]  # split name -> parquet file
    quarantine: str  # parquet file of every removed row with its reason
    labels: list[str] | None  # the model head's label order; None for regression
    report: dict  # cleaning_report.json's content: rows in and out, rows each rule removed
    report_path: str
    digest: str  # content digest of the three splits; models and checkpoints are tied to it


@dataclass(frozen=True)
class ValidationResult:
    """The validate stage's verdict, its failed expectations, its reports and the data profile."""

    success: bool  # no blocking failure (critical ones, and warnings when fail_on_warning is set)
    status: str  # "passed" or "warnings": what a returned (non-raising) result can say
    warning_count: int  # failed warning-severity expectations; a registered version's tag carries it
    critical_failures: list[dict]  # failed critical expectations, each as a summary.json row
    warnings: list[dict]  # failed warning expectations, each as a summary.json row
    summary_path: str  # RUN/data/validation/summary.json: every expectation's outcome
    summary_md: str  # the same as a Markdown table (a Prefect artifact)
    data_docs_dir: str  # Great Expectations' Data Docs
    data_docs_index: str  # their index.html
    profile: dict  # rows, label distribution and length percentiles per split, as in profile.json
    profile_path: str  # RUN/data/validation/profile.json


@dataclass(frozen=True)
class BaselineResult:
    """The baselines stage's test scores per baseline and its test answers (empty when none applies)."""

    dir: str  # RUN/baselines
    metric: str  # the task's primary metric, which ranks the baselines and the model
    scores: dict  # baseline -> {"test": metrics with intervals, "chosen": regularisation, "seconds", "train_rows"}
    predictions: str | None  # test_predictions.parquet: one column per baseline, the test split's row order
    seconds: float  # wall time of all baselines
    onnx: str | None = None  # RUN/baselines/bag_of_words.onnx when model.blend may use it


@dataclass(frozen=True)
class TrainResult:
    """The train stage's model folder and training summary (and the search's, when one ran)."""

    model_dir: str  # RUN/model: the best checkpoint's weights, tokenizer and finetune_flow.json
    summary: dict  # train_summary.json without its log history; "reused": True when an earlier training was kept
    search: dict | None = None  # the Optuna study's summary (RUN/search/summary.json) when search.trials > 0


@dataclass(frozen=True)
class EvaluationResult:
    """The evaluate stage's test metrics, its files and the classes the model handles badly."""

    metrics: dict  # test_* metrics (and calibration figures for classifiers), as in metrics.json
    dir: str  # RUN/evaluation
    files: dict[str, str]  # what -> file: metrics, predictions, model_card, plots, ...
    weak_classes: list[dict]
    weak_classes_text: str  # one readable paragraph; also in the model card
    baselines: dict | None = None  # the model against the best baseline (baselines.compare_with_baselines)
    decision: dict | None = None  # classifiers: the decision record fitted on validation (tasks.bundle.DecisionRecord)


@dataclass(frozen=True)
class ExportResult:
    """The export stage's serving bundle, its ONNX files and the parity and int8 checks."""

    dir: str  # RUN/onnx: the bundle the core serves
    fp32: str
    int8: str | None  # None when export.quantize is off
    parity: dict  # the core against the PyTorch model on the test split
    int8_gate: dict | None  # what int8 costs in the primary metric, and whether it serves
    serving_file: str  # model.onnx or model.int8.onnx
    report_path: str  # export_report.json


@dataclass(frozen=True)
class RegisteredVersion:
    """The register stage's new (or found again) model version and the alias it holds."""

    name: str  # the registered model (registry.model_name)
    version: str  # the version number, as MLflow's client spells it
    alias: str  # "challenger"
    source: str  # the run's logged pyfunc model the version points at
    model_uri: str  # models:/NAME/VERSION
