"""Search: Optuna trials over the `search:` block, then the final training with the best values.

Each trial is a short training (`search.trial_epochs`, optionally on `search.trial_max_rows`
train rows) in RUN/search/trial-N, logged as an MLflow run nested under the flow's run
(tag mlflow.parentRunId). The study lives in RUN/search/optuna.db, so a re-run of the same
run folder keeps its finished trials and runs only the missing ones. Trials save no
checkpoints (only their score matters); the final training keeps its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from tasks import tracking
from tasks.config import PipelineConfig, SearchParam, TrainingConfig
from tasks.io import read_frame, write_frames, write_json

SEARCH = "search"


def search_objective(cfg: PipelineConfig) -> tuple[str, str]:
    """(metric, direction) of the search: the configured ones, else the best-model metric and its direction."""
    from tasks.metrics import greater_is_better, primary_metric

    metric = cfg.search.metric or cfg.training.metric_for_best_model or primary_metric(cfg.data.task)
    direction = cfg.search.direction or ("maximize" if greater_is_better(metric) else "minimize")
    return metric, direction


def suggest_values(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One value per searched training field, typed like the field (integers stay integers)."""
    values = {}
    for name, param in space.items():
        if param.choices is not None:
            values[name] = trial.suggest_categorical(name, param.choices)
        elif int in (TrainingConfig.model_fields[name].annotation,
                     *get_args(TrainingConfig.model_fields[name].annotation)):
            values[name] = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        else:
            values[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
    return values


def with_training_values(cfg: PipelineConfig, values: dict[str, Any], **extra: Any) -> PipelineConfig:
    """A copy of cfg whose training section takes `values` (validated like the YAML would be)."""
    data = cfg.model_dump(mode="json")
    data["training"].update(values, **extra)
    return PipelineConfig.model_validate(data)


def trial_data(data: dict, cfg: PipelineConfig, folder: Path) -> dict:
    """The clean splits a trial trains on: a stable random sample of `trial_max_rows` train rows when set."""
    limit = cfg.search.trial_max_rows
    if not limit:
        return data
    train = read_frame(data["splits"]["train"])
    if len(train) <= limit:
        return data
    sample = train.sample(n=limit, random_state=cfg.training.seed).sort_index()
    path = write_frames({"train": sample}, folder)["train"]
    return {**data, "splits": {**data["splits"], "train": path},
            "digest": f"{data['digest']}-sample{limit}-seed{cfg.training.seed}"}


def run_trial(trial, data: dict, cfg: PipelineConfig, run_dir: Path, parent_run_id: str | None,
              metric: str) -> float:
    """Train one trial in its own folder, nested MLflow run; return its best validation metric."""
    from tasks.train import train_model

    values = suggest_values(trial, cfg.search.space)
    overrides: dict[str, Any] = {"metric_for_best_model": metric, "early_stopping_patience": None}
    if cfg.search.trial_epochs:
        overrides["epochs"] = cfg.search.trial_epochs
    trial_cfg = with_training_values(cfg, values, **overrides)
    folder = run_dir / SEARCH / f"trial-{trial.number}"
    child = tracking.start_child_run(parent_run_id, f"trial-{trial.number}", {"optuna_trial": str(trial.number)}) \
        if parent_run_id else None
    with tracking.ended_run(child):
        if child:
            tracking.log_params(child, {f"training.{k}": v for k, v in values.items()})
        result = train_model(data, trial_cfg, folder, child, trial=True)
        value = result["summary"]["best_metric"]
        if value is None:
            raise ValueError(f"trial {trial.number} logged no validation '{metric}'; "
                             "set search.metric to a metric the task reports (e.g. f1, accuracy, pearson)")
        if child:
            tracking.log_metrics(child, {f"best_val_{metric}": value})
    trial.set_user_attr("mlflow_run_id", child)
    return float(value)


def search_hyperparameters(data: dict, cfg: PipelineConfig, run_dir: str | Path,
                           run_id: str | None = None) -> dict:
    """Run the Optuna study; return the best values, the best score and every trial."""
    import optuna

    run_dir = Path(run_dir)
    folder = run_dir / SEARCH
    folder.mkdir(parents=True, exist_ok=True)
    metric, direction = search_objective(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="search", storage=f"sqlite:///{folder / 'optuna.db'}", load_if_exists=True,
        direction=direction, sampler=optuna.samplers.TPESampler(seed=cfg.training.seed),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    data_for_trials = trial_data(data, cfg, folder / "data")
    remaining = cfg.search.trials - len(done)
    if remaining > 0:
        study.optimize(lambda t: run_trial(t, data_for_trials, cfg, run_dir, run_id, metric), n_trials=remaining)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "mlflow_run_id": t.user_attrs.get("mlflow_run_id")} for t in study.trials]
    result = {"metric": metric, "direction": direction, "best_value": study.best_value,
              "best_params": study.best_params, "trials": trials}
    write_json(folder / "summary.json", result)
    return result


def tune_and_train(data: dict, cfg: PipelineConfig, run_dir: str | Path, run_id: str | None = None) -> dict:
    """Search (when search.trials > 0), then train the final model with the best values."""
    from tasks.train import train_model

    if cfg.search.trials == 0:
        return train_model(data, cfg, run_dir, run_id)
    found = search_hyperparameters(data, cfg, run_dir, run_id)
    if run_id:
        tracking.log_params(run_id, {f"search.best.{k}": v for k, v in found["best_params"].items()})
        tracking.log_metrics(run_id, {f"search_best_val_{found['metric']}": found["best_value"]})
    final = train_model(data, with_training_values(cfg, found["best_params"]), run_dir, run_id)
    return {**final, "search": found}
