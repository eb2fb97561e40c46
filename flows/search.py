"""The `search-trials` flow: one optimizer of a training run's shared Optuna study (`search.parallel`).

A training run under a deployment starts `search.parallel - 1` runs of it (deployment
`search-trials/trials`), which any worker of the pool picks up; each runs trials until the study
in `search.storage` has `search.trials`, logging each as a child run of the training run.
"""

from __future__ import annotations

from prefect import flow

from tasks import quiet, stages
from tasks.config import PipelineConfig
from tasks.platform import tracking


@flow(name="search-trials", log_prints=True)
def search_trials(
    config: PipelineConfig = PipelineConfig(),
    parent_run_id: str = "",
    study_name: str = "",
    optimizer_index: int = 1,
) -> dict:
    """Run trials of the training run's study until it has search.trials (started by that run, not by hand).

    parent_run_id: the training run's MLflow run (its artifacts search/data/ hold the clean splits);
    study_name: the study in config.search.storage; optimizer_index: this optimizer's sampler seed offset.
    """
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        quiet.silence_known_noise()
        tracking.configure()
        return stages.search_trials(config, parent_run_id, study_name, optimizer_index)
