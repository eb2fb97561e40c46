"""The Optuna study of a search: where it lives, its name, and running trials until it has `search.trials`.

Without `search.storage` the study is RUN/search/optuna.db and one optimizer runs the missing
trials, as it always did. With a storage (the team database) several optimizers (processes,
flow runs on other workers) share the study: each opens it by name, runs trials until the
study has exactly `search.trials` finished (complete or pruned) ones, and stops. A heartbeat
marks every running trial; one whose optimizer stopped answering is failed after a grace period
and retried by whichever optimizer starts a trial next.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tasks.config import PipelineConfig
from tasks.secrets import expand_references, redact_text, redact_url

HEARTBEAT_S = 10  # a running trial's optimizer writes this often
GRACE_S = 60  # a trial whose heartbeat is older than this is failed (its optimizer is gone) and retried
RETRIES = 2  # how often a failed trial is retried, each time as a new trial with the same values
STUDY_DB = "optuna.db"
# The deployment whose flow runs are the other optimizers of a shared study: one per stack (`ftflow up`), the
# training run's config its parameter.
TRIALS_DEPLOYMENT = "search-trials/trials"


class StudyStorageError(RuntimeError):
    """The study's database cannot be opened; the message shows its URL masked and says what to check."""


class SurplusTrial(Exception):
    """A trial started while the study already had `search.trials` others: recorded as failed, never run."""


def storage_url(storage: str) -> tuple[str, tuple[str, ...]]:
    """(the SQLAlchemy URL of `storage` with its `${ENV}` references expanded, the values expanded).

    postgresql:// (and postgres://) take the psycopg driver, the one the project installs.
    """
    url, secrets = expand_references(storage, "search.storage")
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        url = f"postgresql+psycopg://{rest}"
    return url, secrets


def study_name(cfg: PipelineConfig, run_id: str | None, run_dir: Path) -> str:
    """The study's name: 'search' in the run's own file; in a shared storage, one per training run.

    Named after the MLflow run (else the run folder), so a resumed run finds its study again and
    no two runs add trials to one study.
    """
    if not cfg.search.storage:
        return "search"
    return f"{cfg.name}-{run_id or run_dir.name}"


def shown_storage(cfg: PipelineConfig, folder: Path) -> str:
    """Where the study lives, as logs show it (a password masked)."""
    return redact_url(cfg.search.storage) if cfg.search.storage else str(folder / STUDY_DB)


def open_study(
    cfg: PipelineConfig,
    folder: Path,
    name: str,
    direction: Literal["maximize", "minimize"],
    pruner: Any,
    seed: int | None,
):
    """Create the study `name`, or load it when it exists (a resumed run, another optimizer)."""
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.study stays light
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    if not cfg.search.storage:
        return optuna.create_study(
            study_name=name,
            storage=f"sqlite:///{folder / STUDY_DB}",
            load_if_exists=True,
            direction=direction,
            sampler=sampler,
            pruner=pruner,
        )
    url, secrets = storage_url(cfg.search.storage)
    try:
        with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9; we rely on it knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
            )
        return optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, direction=direction, sampler=sampler, pruner=pruner
        )
    except Exception as e:  # the driver's message may hold the expanded URL: masked, and the chain dropped
        raise StudyStorageError(
            f"search.storage {redact_url(cfg.search.storage)}: cannot open study '{name}': "
            f"{type(e).__name__}: {redact_text(str(e), secrets)}. Check that the database exists and the "
            f"password's environment variable is set where the search runs (every worker, for search.parallel)"
        ) from None


def finished_count(study) -> int:
    """Trials that count towards `search.trials`: complete or pruned."""
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.study stays light
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def check_not_surplus(trial, trials: int) -> None:
    """Raise SurplusTrial (and stop this optimizer) when `trials` earlier trials are finished or running.

    Two optimizers that finish a trial at the same moment may both start another; the one
    numbered later is the surplus, so the study ends with exactly `trials` finished.
    """
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.study stays light
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
    if len(ahead) >= trials:
        trial.set_user_attr("surplus", True)
        trial.study.stop()
        raise SurplusTrial(f"trial {trial.number}: the study already has {trials} trials; not run")


def run_optimizer(study, objective: Callable[[Any], float], cfg: PipelineConfig) -> None:
    """Run trials of `study` until it has `search.trials` finished ones (this optimizer's share of them)."""
    trials = cfg.search.trials
    if not cfg.search.storage:  # one optimizer: the missing trials, as before shared studies
        remaining = trials - finished_count(study)
        if remaining > 0:
            study.optimize(objective, n_trials=remaining)
        return
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.study stays light
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    def guarded(trial) -> float:
        check_not_surplus(trial, trials)
        return objective(trial)

    # Stop once the finished and the running trials (other optimizers') make `trials`: a running one that
    # fails instead is run again by the training run's optimizer at the end (complete_study).
    taken = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    if len(study.get_trials(deepcopy=False, states=taken)) < trials:
        with quiet_surplus():
            study.optimize(guarded, callbacks=[MaxTrialsCallback(trials, states=taken)], catch=(SurplusTrial,))


class _DropSurplus(logging.Filter):
    """Drops Optuna's two warnings about a surplus trial (its error, then its value)."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        number = re.match(r"Trial (\d+) failed with ", text)
        if number and "SurplusTrial" in text:
            self.numbers.add(number[1])
            return False
        return not (number and number[1] in self.numbers)


@contextmanager
def quiet_surplus():
    """Optuna's warnings (with a traceback) for a surplus trial left out of the log: it is not a failure."""
    logger, drop = logging.getLogger("optuna.study._optimize"), _DropSurplus()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def complete_study(study, objective: Callable[[Any], float], cfg: PipelineConfig, timeout_s: float = 3600) -> None:
    """After the other optimizers ended: fail the trials they left running, then run the missing ones here.

    An optimizer that died mid-trial leaves it running; once its heartbeat is older than the grace
    period it is failed (and retried), and this optimizer runs what is still missing.
    """
    # heavy (optuna): loaded when this runs, so importing tasks.modelling.study stays light
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout_s
    while cfg.search.storage and finished_count(study) < cfg.search.trials and time.monotonic() < deadline:
        optuna.storages.fail_stale_trials(study)
        if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(HEARTBEAT_S)
            continue
        run_optimizer(study, objective, cfg)
