"""The `fine-tune` flow: collect → clean → validate → train → evaluate → export → register.

One MLflow run per flow run, opened here; every task logs into it by id.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks import quiet, stages
from tasks.config import PipelineConfig, flatten_config, load_config
from tasks.io import locked_folder, read_json, write_json, write_text
from tasks.modelling.baselines import comparison_markdown, comparison_rows
from tasks.modelling.blend import blend_text
from tasks.modelling.checkpoints import TRAINING_SECTIONS
from tasks.modelling.encode import check_model_source
from tasks.platform import tracking
from tasks.results import CleanResult, CollectResult, ValidationResult


def open_run(cfg: PipelineConfig, kind: str) -> tuple[str, str, Path]:
    """Start the MLflow run; return (run id, run name, run folder)."""
    run_name = f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = tracking.start_run(
        cfg.registry.experiment,
        run_name,
        tags={
            "flow": kind,
            "config_name": cfg.name,
            "config_digest": cfg.digest(),
            "prefect_flow_run_id": str(flow_run.get_id() or ""),
        },
    )
    run_dir = Path(cfg.run_dir).resolve() / f"{run_name}-{run_id[:8]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", cfg.to_yaml())
    write_json(run_dir / "run.json", {"run_id": run_id, "run_name": run_name, "experiment": cfg.registry.experiment})
    tracking.log_params(run_id, flatten_config(cfg))
    tracking.log_artifact(run_id, run_dir / "config.yaml")
    return run_id, run_name, run_dir


def find_run_folder(run_folder: str) -> Path:
    """The run folder to resume, refused when it is not one."""
    run_dir = Path(run_folder).resolve()
    if not (run_dir / "run.json").exists():
        raise ValueError(
            f"resume_from '{run_folder}' is not a run folder (no run.json); "
            f"give a folder under run_dir written by an earlier fine-tune run"
        )
    return run_dir


def reopen_run(run_dir: Path, cfg: PipelineConfig) -> tuple[str, str, Path]:
    """Continue the MLflow run of an earlier run folder (resume); return (run id, run name, run folder)."""
    check_resume_config(cfg, load_config(run_dir / "config.yaml"), run_dir)
    info = read_json(run_dir / "run.json")
    tracking.reopen_run(info["run_id"])
    tracking.set_tags(info["run_id"], {"resumed_by_prefect_flow_run_id": str(flow_run.get_id() or "")})
    return info["run_id"], info["run_name"], run_dir


def check_resume_config(cfg: PipelineConfig, saved: PipelineConfig, run_dir: Path) -> None:
    """Refuse to resume with a config whose data, model or training differ from the saved one.

    A checkpoint only continues the same training: same rows, same model, same optimisation.
    """
    now, before = flatten_config(cfg), flatten_config(saved)
    changed = sorted(
        k for k in set(now) | set(before) if k.split(".")[0] in TRAINING_SECTIONS and now.get(k) != before.get(k)
    )
    if changed:
        shown = "; ".join(f"{k}: {before.get(k)!r} in the run, {now.get(k)!r} now" for k in changed[:6])
        raise ValueError(
            f"cannot resume {run_dir.name}: the config differs from the one it started with "
            f"({shown}). Resume with the run's own config ({run_dir / 'config.yaml'}; "
            f"`ftflow run --resume-from RUN` uses it when no config is given), or start a new run."
        )


def run_data_stage(
    cfg: PipelineConfig, run_dir: Path, run_id: str
) -> tuple[CollectResult, CleanResult, ValidationResult]:
    raw = stages.collect(cfg, str(run_dir), run_id)
    clean_ref = stages.clean(raw, cfg, str(run_dir), run_id)
    validation = stages.validate(clean_ref, cfg, str(run_dir), run_id)
    return raw, clean_ref, validation


@flow(name="fine-tune", log_prints=True)
def fine_tune(config: PipelineConfig = PipelineConfig(), resume_from: str | None = None) -> dict:
    """Fine-tune a pretrained model on the configured data and register it as 'challenger'.

    resume_from: the run folder of an interrupted run; its MLflow run continues and training
    resumes from its last checkpoint (same data and model required).
    """
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        cfg = config
        quiet.silence_known_noise()
        check_model_source(cfg.model.name, cfg.model.revision)  # a model that cannot load fails before the data stage
        tracking.configure()
        holder = f"fine-tune flow run {flow_run.get_name() or ''}".rstrip()
        if resume_from:  # locked before the MLflow run is touched: a second resume changes nothing
            with locked_folder(find_run_folder(resume_from), holder) as run_dir:
                return run_fine_tune(cfg, *reopen_run(run_dir, cfg))
        run_id, run_name, run_dir = open_run(cfg, "fine-tune")
        with locked_folder(run_dir, holder):
            return run_fine_tune(cfg, run_id, run_name, run_dir)


def run_fine_tune(cfg: PipelineConfig, run_id: str, run_name: str, run_dir: Path) -> dict:
    """The stages of `fine_tune` in an open MLflow run and a locked run folder."""
    logger = get_run_logger()
    logger.info("MLflow run %s (%s); run folder %s", run_name, run_id, run_dir)
    with tracking.ended_run(run_id):
        raw, clean_ref, validation = run_data_stage(cfg, run_dir, run_id)
        baselines = stages.baselines(clean_ref, cfg, str(run_dir), run_id)
        trained = stages.train(clean_ref, cfg, str(run_dir), run_id)
        evaluation = stages.evaluate(trained.model_dir, clean_ref, cfg, str(run_dir), run_id, raw.source, baselines)
        exported = (
            stages.export(trained.model_dir, clean_ref, cfg, str(run_dir), run_id, evaluation.decision)
            if cfg.export.enabled
            else None
        )
        registered = stages.register(run_id, exported, evaluation, clean_ref, cfg, validation) if exported else None
    result = {
        "run_id": run_id,
        "run_name": run_name,
        "run_dir": str(run_dir),
        "experiment": cfg.registry.experiment,
        "metrics": evaluation.metrics,
        "weak_classes": evaluation.weak_classes_text,
        "baselines": comparison_rows(baselines, evaluation.baselines),
        "baseline_verdict": evaluation.baselines["text"] if evaluation.baselines else None,
        "baselines_table": comparison_markdown(baselines, evaluation.baselines),
        "blend": blend_text(evaluation.decision) or None,
        "registered": dataclasses.asdict(registered) if registered else None,  # plain, for the UI and the CLI
        "parity": exported.parity if exported else None,
        "serving_file": exported.serving_file if exported else None,
        "tracking_uri": tracking.shown_tracking_uri(),
        "ui_hint": tracking.run_url_hint(run_id),
        "mlflow_url": tracking.run_ui_url(run_id),
    }
    create_markdown_artifact(summary_markdown(result), key="fine-tune-summary", description=f"{cfg.name}: run summary")
    return result


@flow(name="validate-data", log_prints=True)
def validate_only(config: PipelineConfig = PipelineConfig()) -> dict:
    """Only the data stage (collect, clean, validate), for data owners."""
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        cfg = config
        quiet.silence_known_noise()
        tracking.configure()
        run_id, _, run_dir = open_run(cfg, "validate-data")
        with tracking.ended_run(run_id):
            _, clean_ref, validation = run_data_stage(cfg, run_dir, run_id)
        return {
            "run_id": run_id,
            "run_dir": str(run_dir),
            "rows": clean_ref.report["rows_out"],
            "quarantined": clean_ref.report["quarantined"],
            "validation": dataclasses.asdict(validation),
            "ui_hint": tracking.run_url_hint(run_id),
        }


def summary_markdown(result: dict) -> str:
    """The run summary shown as a Prefect artifact."""
    lines = [
        f"# {result['run_name']}",
        "",
        f"MLflow run `{result['run_id']}` in experiment `{result['experiment']}` ({result['tracking_uri']})",
        "",
    ]
    if result.get("mlflow_url"):  # a server is tracking (`ftflow up`, a remote MLflow): link the run page
        lines += [f"[Open the run in the MLflow UI]({result['mlflow_url']})", ""]
    reg = result.get("registered")
    if reg:
        lines += [f"Registered **{reg['name']}** version **{reg['version']}** as `{reg['alias']}`", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [
        f"| {k} | {v:.4f} |"
        for k, v in sorted(result["metrics"].items())
        if isinstance(v, float) and "support" not in k and not k.startswith("baseline")
    ]
    if result.get("baselines_table"):
        lines += ["", "## Against cheap baselines (same splits)", "", result["baselines_table"]]
    return "\n".join(lines)
