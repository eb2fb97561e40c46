"""Each stage's plain function wrapped once as a Prefect task, with what it logs to MLflow.

The plain functions (tasks/data/collect.py ... tasks/registry/register.py) know nothing of Prefect,
and the data, evaluation and export stages nothing of MLflow; here each gets its retries, timeout,
Prefect artifacts and the run logging of what it returned. Three log on their own, through
tasks/platform/tracking.py, because what they log exists only while they run: train (metrics at
each logging step), search (one child run per trial) and register (the model version and its tags).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar, cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tasks import quiet
from tasks.config import PipelineConfig
from tasks.data import cache as data_cache
from tasks.data.cache import adopt_result
from tasks.kinds import kind_of
from tasks.labels import is_per_class_metric
from tasks.modelling.study import TRIALS_DEPLOYMENT
from tasks.platform import tracking
from tasks.progress import PROGRESS_RECORD
from tasks.results import (
    BaselineResult,
    CleanResult,
    CollectResult,
    EvaluationResult,
    ExportResult,
    RegisteredVersion,
    TrainResult,
    ValidationResult,
)

P = ParamSpec("P")
R = TypeVar("R")


def _retry_on_transient(task, task_run, state) -> bool:
    """Retry failures that may pass (I/O, a busy server); never a refusal or a bad input."""
    try:
        state.result()
    except tracking.TrackingError:  # the tracking server down or busy: may pass (a ValueError only for the CLI)
        return True
    except ValueError:  # config, data and refusal errors: the same input fails the same way
        return False
    except Exception:
        return True
    return True


def _artifact_key(text: str) -> str:
    # Prefect keys: lowercase letters, numbers and dashes only.
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")[:100]


class _ToRunLogger(logging.Handler):
    """Re-emits our plain modules' log records through the Prefect run logger (UI and console)."""

    def __init__(self, run_logger):
        super().__init__(logging.INFO)
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        # Progress lines keep their mark: the console skips them while a progress bar shows the same.
        self.run_logger.log(
            record.levelno, record.getMessage(), extra={PROGRESS_RECORD: getattr(record, PROGRESS_RECORD, False)}
        )


def logs_to_prefect(fn: Callable[P, R]) -> Callable[P, R]:
    """Forward the `tasks.*` loggers to the run logger while `fn` runs, instead of patching print.

    Used with log_prints=False on the stages that run third-party code: Prefect's print patch
    forwards prints made while a library captures stdout (dill's bytecode listing when `datasets`
    fingerprints a table), which spilled pages of disassembly into the run log.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        logger, handler = logging.getLogger("tasks"), _ToRunLogger(get_run_logger())
        level, propagate = logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # the run logger prints to the console already; the root would again
        try:
            return fn(*args, **kwargs)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate

    return wrapper


# --- the data stage, cached on content digests (keys in tasks/data/cache.py) -----------------------
# Each stage's work is a nested task whose result Prefect persists under the key; the outer task
# logs to MLflow either way, so a run that reuses the data still records all of it.


def _data_cache_key(stage: str):
    """A Prefect cache_key_fn for one data stage: None (never cached) when the input is unknown."""

    def key(context, params: dict) -> str | None:
        data = params["cfg"].data
        if stage == "collect":
            upstream = data_cache.sources_fingerprint(data)
        elif stage == "clean":
            upstream = params["raw"].digest
        else:
            ref = params["clean_ref"]
            upstream = f"{ref.digest}:{ref.labels}:{data_cache.suite_digest(data.task)}"
        return data_cache.stage_key(stage, upstream, data)

    return key


@task(name="read-source", persist_result=True, cache_key_fn=_data_cache_key("collect"))
def _read_source(cfg: PipelineConfig, run_dir: str) -> dict:
    # heavy (numpy, pandas via tasks.data.collect): loaded when this runs, so importing tasks.stages stays light
    from tasks.data.collect import collect_data

    return {"run_dir": run_dir, "ref": collect_data(cfg.data, run_dir)}


@task(name="clean-rows", persist_result=True, cache_key_fn=_data_cache_key("clean"))
def _clean_rows(raw: CollectResult, cfg: PipelineConfig, run_dir: str) -> dict:
    # heavy (numpy, pandas, pyarrow via tasks.data.clean): loaded when this runs, so importing tasks.stages stays light
    from tasks.data.clean import clean_data

    return {"run_dir": run_dir, "ref": clean_data(raw.path, cfg.data, run_dir)}


@task(name="run-expectations", persist_result=True, cache_key_fn=_data_cache_key("validate"))
def _run_expectations(clean_ref: CleanResult, cfg: PipelineConfig, run_dir: str) -> dict:
    # heavy (numpy, pandas, pyarrow via tasks.data.validate): loaded when this runs, so importing tasks.stages stays light
    from tasks.data.validate import validate_data

    return {"run_dir": run_dir, "ref": validate_data(clean_ref, cfg.data, run_dir)}


def _run_cached(stage: str, work, run_dir: str, run_id: str, *args):
    """Run a data stage's cached task; a result reused from an earlier run gets its files copied here."""
    out = work(*args, run_dir)
    if out["run_dir"] == run_dir:
        return out["ref"]
    ref = adopt_result(out["ref"], stage, out["run_dir"], run_dir)
    if ref is None:
        get_run_logger().info("%s: the cached result's run folder %s is gone; running it again", stage, out["run_dir"])
        return work.with_options(refresh_cache=True)(*args, run_dir)["ref"]
    get_run_logger().info("%s: input unchanged, reused the result of %s", stage, out["run_dir"])
    tracking.set_tags(run_id, {f"data_{stage}_reused_from": out["run_dir"]})
    return ref


@task(
    name="collect", retries=2, retry_delay_seconds=[5, 30], timeout_seconds=3600, retry_condition_fn=_retry_on_transient
)
@tracking.masks_errors
def collect(cfg: PipelineConfig, run_dir: str, run_id: str) -> CollectResult:
    """Read the source and snapshot it raw (reused when the source is unchanged)."""
    ref = _run_cached("collect", _read_source, run_dir, run_id, cfg)
    get_run_logger().info("collected %d rows from %s (digest %s)", ref.rows, ref.source, ref.digest)
    for f in ref.files:  # the encoding `auto` chose, and lines set aside, per file
        get_run_logger().info(
            "read %s: %d rows, encoding %s, %d unparseable line(s) quarantined",
            f["file"],
            f["rows"],
            f["encoding"],
            f["unparseable_lines"],
        )
    tracking.log_params(run_id, {"data.raw_rows": ref.rows, "data.raw_digest": ref.digest})
    return ref


@task(name="clean", timeout_seconds=3600)
@tracking.masks_errors
def clean(raw: CollectResult, cfg: PipelineConfig, run_dir: str, run_id: str) -> CleanResult:
    """Clean, split, and quarantine; log the report and the quarantine file."""
    try:
        ref = _run_cached("clean", _clean_rows, run_dir, run_id, raw, cfg)
    finally:
        tracking.log_artifact(run_id, Path(run_dir) / "data" / "clean" / "cleaning_report.json", "data")
        tracking.log_artifact(run_id, Path(run_dir) / "data" / "clean" / "quarantine.parquet", "data")
    report = ref.report
    get_run_logger().info(
        "clean: %s rows per split, %d quarantined %s",
        report["rows_out"],
        report["quarantined"],
        {k: v for k, v in report["removed"].items() if v},
    )
    tracking.log_metrics(
        run_id,
        {f"data_rows_{k}": v for k, v in report["rows_out"].items()} | {"data_quarantined": report["quarantined"]},
    )
    tracking.set_tags(run_id, {"data_digest": ref.digest, "data_source": raw.source})
    tracking.log_artifact(run_id, Path(ref.dir) / "labels.json", "data")
    # The held-out split travels with the run: promotion re-scores models on it from the registry alone.
    tracking.log_artifact(run_id, ref.splits["test"], "data")
    return ref


@task(name="validate", timeout_seconds=3600)
@tracking.masks_errors
def validate(clean_ref: CleanResult, cfg: PipelineConfig, run_dir: str, run_id: str) -> ValidationResult:
    """Great Expectations checks; critical failures stop the flow before training."""
    # heavy (numpy, pandas, pyarrow via tasks.data.validate): loaded when this runs, so importing tasks.stages stays light
    from tasks.data.validate import DataValidationError, describe_finding

    folder = Path(run_dir) / "data" / "validation"
    try:
        result = _run_cached("validate", _run_expectations, run_dir, run_id, clean_ref, cfg)
    except DataValidationError as e:
        assert e.result is not None, "validate_data raises with its report attached"
        _log_validation(e.result, folder, cfg, run_id)
        raise
    _log_validation(result, folder, cfg, run_id)
    _log_lineage(clean_ref, run_id)
    for warning in result.warnings:  # not blocking, but the user should read them before the metrics
        get_run_logger().warning("data validation warning:\n%s", "\n".join(describe_finding(warning)))
    return result


def _log_validation(result: ValidationResult, folder: Path, cfg: PipelineConfig, run_id: str) -> None:
    """Summary, profile and Data Docs to MLflow; the summary table as a Prefect artifact."""
    if folder.exists():
        tracking.log_artifact(run_id, folder, "data/validation")
    md = folder / "summary.md"
    if md.exists():
        create_markdown_artifact(
            md.read_text(), key=_artifact_key(f"{cfg.name}-data-validation"), description="Great Expectations summary"
        )
    tracking.log_metrics(
        run_id,
        {
            "data_validation_warnings": len(result.warnings),
            "data_validation_critical": len(result.critical_failures),
        },
    )
    flat = {}
    for split, stats in (result.profile.get("length_percentiles") or {}).items():
        for k, v in (stats or {}).items():
            if v is not None:
                flat[f"data_len_{split}_{k}"] = v
    tracking.log_metrics(run_id, flat)


def _log_lineage(clean_ref: CleanResult, run_id: str) -> None:
    # heavy (numpy, pandas via tasks.io): loaded when this runs, so importing tasks.stages stays light
    from tasks.io import read_frame

    for split, path in clean_ref.splits.items():
        df = read_frame(path)
        tracking.log_dataset_input(
            run_id,
            df,
            name=split,
            source=path,
            digest=clean_ref.digest,
            context="training" if split == "train" else split,
        )


@task(name="baselines", timeout_seconds=3600, log_prints=False)
@logs_to_prefect
@tracking.masks_errors
def baselines(clean_ref: CleanResult, cfg: PipelineConfig, run_dir: str, run_id: str) -> BaselineResult:
    """Fit the cheap baselines on the same splits; log their test metrics (evaluation compares the model)."""
    # heavy (numpy, pandas via tasks.modelling.baselines): loaded when this runs, so importing tasks.stages stays light
    from tasks.modelling.baselines import comparison_markdown, fit_baselines

    quiet.silence_known_noise(torch_stage=True)
    result = fit_baselines(clean_ref, cfg, run_dir)
    if not result.scores:
        get_run_logger().info("no baseline applies to %s (or baselines.enabled is false)", cfg.data.task)
        return result
    tracking.log_metrics(
        run_id,
        {f"baseline_{name}_test_{k}": float(v) for name, s in result.scores.items() for k, v in s["test"].items()}
        | {"baselines_seconds": result.seconds},
    )
    tracking.log_artifact(run_id, result.dir, "baselines")
    create_markdown_artifact(
        comparison_markdown(result, None), key=_artifact_key(f"{cfg.name}-baselines"), description="baselines"
    )
    return result


@task(
    name="train",
    retries=1,
    retry_delay_seconds=10,
    timeout_seconds=6 * 3600,
    retry_condition_fn=_retry_on_transient,
    log_prints=False,
)
@logs_to_prefect
@tracking.masks_errors
def train(clean_ref: CleanResult, cfg: PipelineConfig, run_dir: str, run_id: str) -> TrainResult:
    """Fine-tune (after an Optuna search when search.trials > 0); a retry resumes from the last checkpoint."""
    # heavy (numpy, pandas via tasks.modelling.search): loaded when this runs, so importing tasks.stages stays light
    from tasks.modelling.search import tune_and_train

    quiet.silence_known_noise(torch_stage=True)
    # A worker's (or the serving process's) flow run: the other optimizers are flow runs any worker picks up.
    launch = launch_trial_runs if cfg.search.parallel > 1 and os.environ.get("PREFECT__FLOW_RUN_ID") else None
    if cfg.search.trials and cfg.search.parallel > 1:
        get_run_logger().info(
            "search: %d optimizers share the study (this run and %d %s), %d trials in all",
            cfg.search.parallel,
            cfg.search.parallel - 1,
            f"flow runs of {TRIALS_DEPLOYMENT}" if launch else "local processes, each given its share of the cores",
            cfg.search.trials,
        )
    result = tune_and_train(clean_ref, cfg, run_dir, run_id, launch)
    s = result.summary
    if s.get("reused"):
        get_run_logger().info("training had already finished in %s; its model is reused", run_dir)
        tracking.set_tags(run_id, {"training_reused": "true"})
    elif s["resumed_from"]:
        get_run_logger().info("resumed from %s (step %d)", s["resumed_from"], s["resumed_at_step"])
        tracking.set_tags(run_id, {"resumed_from": s["resumed_from"]})
    if result.search:
        get_run_logger().info(
            "search: best %s=%.4f with %s",
            result.search["metric"],
            result.search["best_value"],
            result.search["best_params"],
        )
    get_run_logger().info(
        "trained %d steps in %.0f s (%.1f samples/s, %s); best %s=%s",
        s["global_step"],
        s["train_runtime_s"] or 0,
        s["train_samples_per_second"] or 0,
        s.get("precision", "not recorded"),
        s["metric_for_best_model"],
        s["best_metric"],
    )
    tracking.set_tags(run_id, {"training_precision": s.get("precision", "not recorded")})
    if s.get("resolved_defaults"):  # what max_length auto and training.min_updates chose (tasks/modelling/sizing.py)
        # heavy (numpy, pandas via tasks.modelling.sizing): loaded when this runs, so importing tasks.stages stays light
        from tasks.modelling.sizing import resolved_tags

        tracking.set_tags(run_id, resolved_tags(s["resolved_defaults"]))
    tracking.log_metrics(
        run_id,
        {"train_runtime_s": s["train_runtime_s"] or 0, "train_samples_per_second": s["train_samples_per_second"] or 0},
    )
    return result


@task(name="evaluate", timeout_seconds=3600, log_prints=False)
@logs_to_prefect
@tracking.masks_errors
def evaluate(
    model_dir: str,
    clean_ref: CleanResult,
    cfg: PipelineConfig,
    run_dir: str,
    run_id: str,
    source: str = "",
    baselines_ref: BaselineResult | None = None,
) -> EvaluationResult:
    """Score on test; log metrics, plots, errors and the model card; compare with the baselines."""
    # heavy (numpy, pandas via tasks.modelling.baselines): loaded when this runs, so importing tasks.stages stays light
    from tasks.modelling.baselines import comparison_markdown
    from tasks.modelling.blend import blend_text
    from tasks.modelling.evaluate import evaluate_model, weak_classes_markdown

    quiet.silence_known_noise(torch_stage=True)
    result = evaluate_model(model_dir, clean_ref, cfg, run_dir, source, baselines_ref)
    if result.baselines is not None and baselines_ref is not None:
        tracking.set_tags(
            run_id,
            {
                "beats_baseline": str(result.baselines["beats"]).lower(),
                "best_baseline": result.baselines["best_baseline"],
            },
        )
        blended = blend_text(result.decision)
        create_markdown_artifact(
            "# The model against the baselines\n\n"
            + comparison_markdown(baselines_ref, result.baselines)
            + (f"\n\n{blended}" if blended else ""),
            key=_artifact_key(f"{cfg.name}-baselines-comparison"),
            description="the fine-tuned model beside the baselines on the same test rows",
        )
    tracking.log_metrics(run_id, result.metrics)
    tracking.log_artifact(run_id, result.dir, "evaluation")
    tracking.log_artifact(run_id, result.files["model_card"], "model_card")
    m = result.metrics
    if "test_ece_before" in m:  # classifiers: fitted on validation, applied by every scorer
        per_label = "decision_threshold_mean" in m
        get_run_logger().info(
            "calibration: %s, test ECE %.4f -> %.4f (floor from sampling alone %.4f); threshold %s",
            "Platt scaling per label" if per_label else f"temperature {m['calibration_temperature']:.4f}",
            m["test_ece_before"],
            m["test_ece_after"],
            m["test_ece_floor"],
            f"per label, mean {m['decision_threshold_mean']:.3f}" if per_label else m.get("decision_threshold", "none"),
        )
    rows = [
        {"metric": k, "value": round(v, 4)}
        for k, v in sorted(result.metrics.items())
        if isinstance(v, float) and "support" not in k
    ]
    create_table_artifact(rows, key=_artifact_key(f"{cfg.name}-test-metrics"), description="test metrics")
    # The baselines' figures have their own lines (the baselines stage, the verdict above).
    shown = {r["metric"]: r["value"] for r in rows if not is_per_class_metric(r["metric"])}
    get_run_logger().info("test metrics: %s", {k: v for k, v in shown.items() if not k.startswith("baseline")})
    if not kind_of(cfg.data.task).has_labels:  # no classes, so no weak ones
        return result
    if result.weak_classes:
        get_run_logger().warning(result.weak_classes_text)
    create_markdown_artifact(
        weak_classes_markdown(result.weak_classes, result.weak_classes_text),
        key=_artifact_key(f"{cfg.name}-weak-classes"),
        description="classes with a low test F1 or never predicted",
    )
    tracking.log_metrics(run_id, {"test_weak_classes": len(result.weak_classes)})
    return result


@task(name="export", timeout_seconds=3600, log_prints=False)
@logs_to_prefect
@tracking.masks_errors
def export(
    model_dir: str, clean_ref: CleanResult, cfg: PipelineConfig, run_dir: str, run_id: str, decision: dict | None = None
) -> ExportResult:
    """ONNX fp32 + int8 with parity and the int8 gate; `decision`: evaluation's decision record for the bundle."""
    # heavy (numpy, pandas, pyarrow via tasks.modelling.export): loaded when this runs, so importing tasks.stages stays light
    from tasks.modelling.export import export_model

    quiet.silence_known_noise(torch_stage=True)
    result = export_model(model_dir, clean_ref, cfg, run_dir, decision)
    p = result.parity
    tracking.log_metrics(
        run_id,
        {
            "onnx_parity_max_abs_diff": p["max_abs_diff"],
            "onnx_parity_changed_rows": p["changed_rows"],
            "onnx_parity_passed": float(p["passed"]),
        },
    )
    gate = result.int8_gate
    if gate:
        tracking.log_metrics(
            run_id,
            {
                "onnx_int8_metric_loss": gate["loss"],
                "onnx_int8_used": float(gate["passed"]),
                "onnx_int8_changed_share": gate["changed_share"],
            },
        )
        if gate["why"]:
            get_run_logger().warning(gate["why"])
    tracking.log_artifact(run_id, result.report_path, "onnx")
    tracking.log_artifact(run_id, result.fp32, "onnx")
    get_run_logger().info(
        "ONNX parity %s on %d test rows (%d answers differ, max |Δ%s| %.2e); serving %s",
        "passed" if p["passed"] else "FAILED",
        p["rows"],
        p["changed_rows"],
        p["compared"],
        p["max_abs_diff"],
        result.serving_file,
    )
    return result


@task(
    name="register", retries=2, retry_delay_seconds=[5, 30], timeout_seconds=900, retry_condition_fn=_retry_on_transient
)
@tracking.masks_errors
def register(
    run_id: str,
    export_ref: ExportResult,
    evaluation: EvaluationResult,
    clean_ref: CleanResult,
    cfg: PipelineConfig,
    validation: ValidationResult | None,
) -> RegisteredVersion:
    """New registry version with alias 'challenger'."""
    # heavy (numpy, pandas via tasks.registry.register): loaded when this runs, so importing tasks.stages stays light
    from tasks.registry.register import register_model

    quiet.silence_known_noise()
    result = register_model(run_id, export_ref, evaluation, clean_ref, cfg, validation)
    tracking.set_tags(run_id, {"registered_model": result.name, "registered_version": result.version})
    get_run_logger().info("registered %s version %s as '%s'", result.name, result.version, result.alias)
    return result


# --- search.parallel under a deployment: the other optimizers as flow runs -------------------------


@dataclasses.dataclass
class TrialFlowRuns:
    """Flow runs of the search-trials deployment, each an optimizer of the study; `wait` polls them to the end."""

    ids: list
    poll_s: float = 5.0

    def wait(self) -> list[str]:
        """Wait until every run is final; what went wrong in each (the study may still be complete)."""
        # heavy (prefect's client): loaded when this runs, so importing tasks.stages stays light
        from prefect.client.orchestration import get_client

        problems = []
        with get_client(sync_client=True) as client:
            for run_id in self.ids:
                while not (run := client.read_flow_run(run_id)).state or not run.state.is_final():
                    time.sleep(self.poll_s)
                if not run.state.is_completed():
                    problems.append(f"flow run {run.name} ({run_id}) ended {run.state.name}: {run.state.message}")
        return problems

    def stop(self) -> None:
        """Cancel every run not final: one not started yet is cancelled, a running one's worker is asked to end it."""
        # heavy (prefect's client): loaded when this runs, so importing tasks.stages stays light
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled, Cancelling

        message = "the training run's own optimizer failed: the search is stopped"
        with get_client(sync_client=True) as client:
            for run_id in self.ids:
                run = client.read_flow_run(run_id)
                if run.state and run.state.is_final():
                    continue
                waiting = run.state is None or run.state.is_scheduled()  # no worker holds it: nothing to end
                client.set_flow_run_state(
                    run_id, Cancelled(message=message) if waiting else Cancelling(message=message), force=True
                )


def launch_trial_runs(
    count: int, cfg: PipelineConfig, data: CleanResult, run_dir: Path, run_id: str | None, study: str
) -> TrialFlowRuns:
    """Publish the trials' clean splits to the run's MLflow artifacts, then start `count` optimizer flow runs."""
    # heavy (prefect's deployments; pandas via the search): loaded when this runs, so importing tasks.stages stays light
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from tasks.modelling.remote_search import publish_trial_data

    if not run_id:
        raise ValueError(
            "search.parallel: the optimizer flow runs log their trials under the training run; none is open"
        )
    publish_trial_data(data, run_id, run_dir / "search" / "published")
    ids = []
    for index in range(1, count + 1):
        parameters = {
            "config": cfg.model_dump(mode="json"),  # masked: a password travels as its ${ENV} reference
            "parent_run_id": run_id,
            "study_name": study,
            "optimizer_index": index,
        }
        try:
            run = run_deployment(  # sync here: a task thread, no event loop
                TRIALS_DEPLOYMENT,
                parameters=parameters,
                timeout=0,
                as_subflow=False,
                flow_run_name=f"{study}-optimizer-{index}",
                tags=["finetune-flow", cfg.name, "search"],
            )
        except ObjectNotFound:
            raise ValueError(
                f"search.parallel {cfg.search.parallel}: this Prefect server has no deployment {TRIALS_DEPLOYMENT}; "
                "`ftflow up` registers it (restart a stack started before it existed), or set search.parallel to 1"
            ) from None
        ids.append(cast(FlowRun, run).id)
    return TrialFlowRuns(ids)


@task(name="search-trials", timeout_seconds=6 * 3600, log_prints=False)
@logs_to_prefect
@tracking.masks_errors
def search_trials(cfg: PipelineConfig, parent_run_id: str, study_name: str, optimizer_index: int) -> dict:
    """One optimizer of a training run's shared study: trials until the study has search.trials."""
    # heavy (numpy, pandas, optuna via tasks.modelling.remote_search): loaded when this runs, so importing tasks.stages stays light
    from tasks.modelling.remote_search import run_search_trials

    quiet.silence_known_noise(torch_stage=True)
    result = run_search_trials(cfg, parent_run_id, study_name, optimizer_index)
    get_run_logger().info(
        "ran trials %s of study %s (%d finished in all)",
        [t["number"] for t in result["trials_run"]],
        study_name,
        result["study_finished"],
    )
    return result
