"""Search: Optuna trials over the `search:` block, then the final training with the best values.

Each trial is a short training (`search.trial_epochs`, optionally on `search.trial_max_rows`
train rows) in RUN/search/trial-N, logged as an MLflow run nested under the flow's run
(tag mlflow.parentRunId). With `search.prune`, a trial whose validation score after an
evaluation is below the median of earlier trials there stops (Optuna's median pruner). The
study lives in RUN/search/optuna.db, or in `search.storage` (tasks/modelling/study.py), so a
re-run of the same run keeps its finished (and pruned) trials and runs only the missing ones.
Trials save no checkpoints (only their score matters); the final training keeps its own.

`search.parallel` > 1: this process is one optimizer of the shared study; the others are
started by a launcher (the train stage's: flow runs of the search-trials deployment, which
tasks/modelling/remote_search.py runs; without a deployment: local processes, here), each
running trials until the study has `search.trials`.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from tasks import quiet
from tasks.config import PipelineConfig, SearchParam, TrainingConfig
from tasks.io import read_frame, write_frames, write_json
from tasks.modelling.metrics import greater_is_better, primary_metric
from tasks.modelling.study import (
    complete_study,
    finished_count,
    open_study,
    run_optimizer,
    shown_storage,
    study_name,
)
from tasks.modelling.train import train_model
from tasks.platform import tracking
from tasks.results import CleanResult, TrainResult

log = logging.getLogger(__name__)
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
    trial,
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: Path,
    parent_run_id: str | None,
    metric: str,
    optimizer: str | None = None,
) -> float:
    """One Optuna trial: a short training with the sampled values; returns the validation metric.

    `optimizer` names the process or flow run that ran it (a tag of its MLflow run).
    """
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
    tags = {"optuna_trial": str(trial.number)} | ({"search_optimizer": optimizer} if optimizer else {})
    child = tracking.start_child_run(parent_run_id, f"trial-{trial.number}", tags) if parent_run_id else None
    if optimizer:
        trial.set_user_attr("optimizer", optimizer)
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


def open_search_study(cfg: PipelineConfig, run_dir: Path, name: str, optimizer_index: int = 0):
    """The run's study (made when missing); each optimizer of a shared study samples with its own seed."""
    _, direction = search_objective(cfg)
    seed = cfg.training.seed + optimizer_index  # one seed for all would draw the same first values in each
    return open_study(cfg, run_dir / SEARCH, name, direction, make_pruner(cfg), seed)


def optimize_trials(
    study,
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: Path,
    parent_run_id: str | None,
    optimizer: str | None = None,
) -> None:
    """This optimizer's share of the study's trials (all of them when it is the only one)."""
    metric, _ = search_objective(cfg)
    run_optimizer(study, lambda t: run_trial(t, data, cfg, run_dir, parent_run_id, metric, optimizer), cfg)


def optimizer_name() -> str:
    """This process as a trial's tag shows it: the Prefect flow run when one runs it, else host and pid."""
    # heavy (prefect): loaded when this runs, so importing tasks.modelling.search stays light
    from prefect.runtime import flow_run

    run_id, run_name = flow_run.get_id(), flow_run.get_name()
    where = f"{socket.gethostname()}:{os.getpid()}"
    return f"flow run {run_name} ({run_id}) on {where}" if run_id else f"process {where}"


def core_share(parallel: int) -> int:
    """Threads for each of `parallel` optimizers on this machine: its share of the cores, at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // parallel)


def optimize_in_process(
    cfg: PipelineConfig,
    data: CleanResult,
    run_dir: str,
    parent_run_id: str | None,
    name: str,
    optimizer_index: int,
    threads: int,
) -> None:
    """A local optimizer process (search.parallel outside a deployment): its share of the study's trials."""
    # heavy (torch): loaded when this runs, in the optimizer's own process
    import torch

    quiet.silence_known_noise(torch_stage=True)
    torch.set_num_threads(threads)
    tracking.configure()
    study = open_search_study(cfg, Path(run_dir), name, optimizer_index)
    optimize_trials(study, data, cfg, Path(run_dir), parent_run_id, optimizer_name())


@dataclasses.dataclass
class LocalOptimizers:
    """The extra optimizers as processes of this machine; `wait` joins them."""

    processes: list

    def wait(self) -> list[str]:
        """Join every process; what went wrong in each (the study may still be complete: others retry)."""
        problems = []
        for p in self.processes:
            p.join()
            if p.exitcode != 0:
                problems.append(f"optimizer process {p.pid} ended with exit code {p.exitcode}")
        return problems

    def stop(self) -> None:
        """End every process still running (SIGTERM, then SIGKILL after 10 s)."""
        for p in self.processes:
            if p.is_alive():
                p.terminate()
        for p in self.processes:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()


def start_local_optimizers(
    count: int, cfg: PipelineConfig, data: CleanResult, run_dir: Path, parent_run_id: str | None, name: str
) -> LocalOptimizers:
    """`count` optimizer processes on this machine (spawned: no forked torch or MLflow state)."""
    ctx = multiprocessing.get_context("spawn")
    threads = core_share(count + 1)
    processes = [
        ctx.Process(
            target=optimize_in_process,
            args=(cfg, data, str(run_dir), parent_run_id, name, index, threads),
            name=f"search-optimizer-{index}",
        )
        for index in range(1, count + 1)
    ]
    for p in processes:
        p.start()
    return LocalOptimizers(processes)


class Optimizers(Protocol):
    def wait(self) -> list[str]: ...

    def stop(self) -> None: ...


# (extra optimizer count, config, clean splits, run folder, parent MLflow run, study name) -> started optimizers
Launcher = Callable[[int, PipelineConfig, CleanResult, Path, "str | None", str], Optimizers]


def stop_others(others: Optimizers) -> None:
    """Stop the other optimizers of a failing search; a failure to stop them is logged, not raised over the first."""
    try:
        others.stop()
        log.warning("search: this run's optimizer failed; the other optimizers were stopped")
    except Exception as e:  # the search's own error is the one to report
        log.warning("search: this run's optimizer failed, and stopping the others failed too: %s", e)


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` inside the block (unchanged with None), restored after."""
    if threads is None:
        yield
        return
    # heavy (torch): loaded when this runs, so importing tasks.modelling.search stays light
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def summarize_study(study, metric: str, direction: str) -> dict:
    """The search's result record: the best values and score, and every trial (but surplus ones, never run)."""
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": t.params,
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        }
        for t in study.trials
        if not t.user_attrs.get("surplus")
    ]
    return {
        "metric": metric,
        "direction": direction,
        "best_value": study.best_value,
        "best_params": study.best_params,
        "trials": trials,
    }


def search_hyperparameters(
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: str | Path,
    run_id: str | None = None,
    launch: Launcher | None = None,
) -> dict:
    """Run the Optuna study; return the best values, the best score and every trial.

    With search.parallel > 1 this process is one optimizer and `launch` starts the others
    (local processes when None), which share the study through search.storage.
    """
    run_dir = Path(run_dir)
    folder = run_dir / SEARCH
    folder.mkdir(parents=True, exist_ok=True)
    metric, direction = search_objective(cfg)
    name = study_name(cfg, run_id, run_dir)
    study = open_search_study(cfg, run_dir, name)  # made here first: the others load it
    data_for_trials = trial_data(data, cfg, folder / "data")
    parallel = cfg.search.parallel
    others = None
    if parallel > 1 and finished_count(study) < cfg.search.trials:
        others = (launch or start_local_optimizers)(parallel - 1, cfg, data_for_trials, run_dir, run_id, name)
    optimizer = optimizer_name() if parallel > 1 else None
    with torch_threads(core_share(parallel) if others and launch is None else None):
        try:
            optimize_trials(study, data_for_trials, cfg, run_dir, run_id, optimizer)
            problems = others.wait() if others else []
        except BaseException:
            # This run fails (or is interrupted while it waits): its other optimizers would otherwise go on
            # filling a study nobody reads.
            if others:
                stop_others(others)
            raise
        complete_study(study, lambda t: run_trial(t, data_for_trials, cfg, run_dir, run_id, metric, optimizer), cfg)
    if finished_count(study) < cfg.search.trials:
        raise RuntimeError(
            f"the search's study '{name}' ({shown_storage(cfg, folder)}) has {finished_count(study)} of "
            f"{cfg.search.trials} finished trials: {'; '.join(problems) or 'an optimizer stopped early'}. "
            "Re-run (resume) the run: its study keeps the finished trials and runs the missing ones"
        )
    for problem in problems:  # the others' trials were retried here: the study is whole, but say what failed
        log.warning("search: %s; its trials were run by the other optimizers", problem)
    result = summarize_study(study, metric, direction)
    write_json(folder / "summary.json", result)
    return result


def tune_and_train(
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: str | Path,
    run_id: str | None = None,
    launch: Launcher | None = None,
) -> TrainResult:
    """Search (when search.trials > 0), then train the final model with the best values."""
    if cfg.search.trials == 0:
        return train_model(data, cfg, run_dir, run_id)
    found = search_hyperparameters(data, cfg, run_dir, run_id, launch)
    if run_id:
        tracking.log_params(run_id, {f"search.best.{k}": v for k, v in found["best_params"].items()})
        tracking.log_metrics(run_id, {f"search_best_val_{found['metric']}": found["best_value"]})
    final = train_model(data, with_training_values(cfg, found["best_params"]), run_dir, run_id)
    return dataclasses.replace(final, search=found)
