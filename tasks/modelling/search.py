"""Search: Optuna trials over the `search:` block, then the final training with the best values.

Each trial is a short training (`search.trial_epochs`, optionally on `search.trial_max_rows`
train rows) in RUN/search/trial-N, logged as an MLflow run nested under the flow's run
(tag mlflow.parentRunId). With `search.prune`, a trial whose validation score after an
evaluation is below the median of earlier trials there stops (Optuna's median pruner). The
study lives in RUN/search/optuna.db, so a re-run of the same run folder keeps its finished
(and pruned) trials and runs only the missing ones. Trials save no checkpoints (only their
score matters); the final training keeps its own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, get_args

from tasks.config import PipelineConfig, SearchParam, TrainingConfig
from tasks.io import read_frame, write_frames, write_json
from tasks.modelling.metrics import greater_is_better, primary_metric
from tasks.modelling.train import train_model
from tasks.platform import tracking
from tasks.results import CleanResult, TrainResult

SEARCH = "search"
PRUNE_AFTER_TRIALS = 2  # trials that always run to the end: the median needs something to stand on


def search_objective(cfg: PipelineConfig) -> tuple[str, Literal["maximize", "minimize"]]:
    """(metric, direction) of the search: the configured ones, else the best-model metric and its direction."""
    metric = cfg.search.metric or cfg.training.metric_for_best_model or primary_metric(cfg.data.task)
    direction = cfg.search.direction or ("maximize" if greater_is_better(metric) else "minimize")
    return metric, direction


def suggest_values(trial, space: dict[str, SearchParam]) -> dict[str, Any]:
    """One value per searched training field, typed like the field (integers stay integers)."""
    values = {}
    for name, param in space.items():
        if param.choices is not None:
            values[name] = trial.suggest_categorical(name, param.choices)
        elif int in (
            TrainingConfig.model_fields[name].annotation,
            *get_args(TrainingConfig.model_fields[name].annotation),
        ):
            assert param.low is not None and param.high is not None, "SearchParam: a range has low and high"
            values[name] = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        else:
            values[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
    return values


def with_training_values(cfg: PipelineConfig, values: dict[str, Any], **extra: Any) -> PipelineConfig:
    """A copy of cfg whose training section takes `values` (validated like the YAML would be)."""
    data = cfg.model_dump(mode="json")
    data["training"].update(values, **extra)
    return PipelineConfig.model_validate(data)


def trial_data(data: CleanResult, cfg: PipelineConfig, folder: Path) -> CleanResult:
    """The clean splits a trial trains on: a stable random sample of `trial_max_rows` train rows when set."""
    limit = cfg.search.trial_max_rows
    if not limit:
        return data
    train = read_frame(data.splits["train"])
    if len(train) <= limit:
        return data
    sample = train.sample(n=limit, random_state=cfg.training.seed).sort_index()
    path = write_frames({"train": sample}, folder)["train"]
    return dataclasses.replace(
        data, splits={**data.splits, "train": path}, digest=f"{data.digest}-sample{limit}-seed{cfg.training.seed}"
    )


def make_pruner(cfg: PipelineConfig):
    """Optuna's median pruner once two trials have finished (none when search.prune is off)."""
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.search stays light
    import optuna

    if not cfg.search.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=0)


def make_pruning_callback(trial, metric: str):
    """A TrainerCallback that reports each validation score to Optuna and stops a trial it prunes.

    Scores are reported by evaluation count, not global step: trials with another batch size
    take other steps, and the median is taken over trials at the same step number.
    """
    # heavy (optuna, transformers): loaded when this runs, so importing tasks.modelling.search stays light
    import optuna
    from transformers import TrainerCallback

    class PruningCallback(TrainerCallback):
        evaluations = 0

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None:
                return
            self.evaluations += 1
            trial.report(float(value), self.evaluations)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric}={value:.4f} after evaluation {self.evaluations}")

    return PruningCallback()


def run_trial(
    trial, data: CleanResult, cfg: PipelineConfig, run_dir: Path, parent_run_id: str | None, metric: str
) -> float:
    """Train one trial in its own folder, nested MLflow run; return its best validation metric."""
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.search stays light
    import optuna

    values = suggest_values(trial, cfg.search.space)
    overrides: dict[str, Any] = {"metric_for_best_model": metric, "early_stopping_patience": None}
    if cfg.search.trial_epochs:
        overrides["epochs"] = cfg.search.trial_epochs
    trial_cfg = with_training_values(cfg, values, **overrides)
    folder = run_dir / SEARCH / f"trial-{trial.number}"
    # Distributed trials run in torchrun's processes, which cannot report back between evaluations.
    prune = cfg.search.prune and cfg.training.distributed.nproc_per_node == 1
    child = (
        tracking.start_child_run(parent_run_id, f"trial-{trial.number}", {"optuna_trial": str(trial.number)})
        if parent_run_id
        else None
    )
    pruned = None
    with tracking.ended_run(child):
        if child:
            tracking.log_params(child, {f"training.{k}": v for k, v in values.items()})
        try:
            result = train_model(
                data,
                trial_cfg,
                folder,
                child,
                trial=True,
                callbacks=[make_pruning_callback(trial, metric)] if prune else None,
            )
        except optuna.TrialPruned as e:  # a finished run (what it logged stands), tagged as pruned
            pruned = e
            if child:
                tracking.set_tags(child, {"optuna_pruned": str(e)})
        else:
            value = result.summary["best_metric"]
            if value is None:
                raise ValueError(
                    f"trial {trial.number} logged no validation '{metric}'; "
                    "set search.metric to a metric the task reports (e.g. f1, accuracy, pearson)"
                )
            if child:
                tracking.log_metrics(child, {f"best_val_{metric}": value})
    trial.set_user_attr("mlflow_run_id", child)
    if pruned is not None:
        raise pruned
    return float(value)


def search_hyperparameters(
    data: CleanResult, cfg: PipelineConfig, run_dir: str | Path, run_id: str | None = None
) -> dict:
    """Run the Optuna study; return the best values, the best score and every trial."""
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.search stays light
    import optuna

    run_dir = Path(run_dir)
    folder = run_dir / SEARCH
    folder.mkdir(parents=True, exist_ok=True)
    metric, direction = search_objective(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="search",
        storage=f"sqlite:///{folder / 'optuna.db'}",
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.training.seed),
        pruner=make_pruner(cfg),
    )
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = [t for t in study.trials if t.state in finished]
    data_for_trials = trial_data(data, cfg, folder / "data")
    remaining = cfg.search.trials - len(done)
    if remaining > 0:
        study.optimize(lambda t: run_trial(t, data_for_trials, cfg, run_dir, run_id, metric), n_trials=remaining)
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        }
        for t in study.trials
    ]
    result = {
        "metric": metric,
        "direction": direction,
        "best_value": study.best_value,
        "best_params": study.best_params,
        "trials": trials,
    }
    write_json(folder / "summary.json", result)
    return result


def tune_and_train(
    data: CleanResult, cfg: PipelineConfig, run_dir: str | Path, run_id: str | None = None
) -> TrainResult:
    """Search (when search.trials > 0), then train the final model with the best values."""
    if cfg.search.trials == 0:
        return train_model(data, cfg, run_dir, run_id)
    found = search_hyperparameters(data, cfg, run_dir, run_id)
    if run_id:
        tracking.log_params(run_id, {f"search.best.{k}": v for k, v in found["best_params"].items()})
        tracking.log_metrics(run_id, {f"search_best_val_{found['metric']}": found["best_value"]})
    final = train_model(data, with_training_values(cfg, found["best_params"]), run_dir, run_id)
    return dataclasses.replace(final, search=found)
