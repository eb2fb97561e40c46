"""The optimizers of a shared study that run elsewhere: flow runs of the search-trials deployment.

They share no folder with the training run. The training run logs the clean splits its trials
train on as artifacts of its MLflow run (`search/data/`, with `clean.json`: labels, digest,
report); an optimizer downloads them into a temporary folder of its own, opens the study by
name in `search.storage`, and runs trials (each a child run of the training run) until the
study has `search.trials`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.io import read_json, write_json
from tasks.modelling.search import finished_count, open_search_study, optimize_trials, optimizer_name
from tasks.platform import tracking
from tasks.results import CleanResult

DATA_ARTIFACTS = "search/data"
CLEAN_RECORD = "clean.json"


def publish_trial_data(data: CleanResult, run_id: str, folder: Path) -> None:
    """Log the trials' clean splits and their record under the run's artifacts `search/data/`."""
    folder.mkdir(parents=True, exist_ok=True)
    record = dataclasses.asdict(data) | {"splits": {name: Path(path).name for name, path in data.splits.items()}}
    write_json(folder / CLEAN_RECORD, record)
    for path in data.splits.values():
        tracking.log_artifact(run_id, path, DATA_ARTIFACTS)
    tracking.log_artifact(run_id, folder / CLEAN_RECORD, DATA_ARTIFACTS)


def fetch_trial_data(run_id: str, folder: Path) -> CleanResult:
    """The trials' clean splits of run `run_id`, downloaded into `folder`."""
    local = tracking.download_run_artifact(run_id, DATA_ARTIFACTS, folder)
    record = read_json(local / CLEAN_RECORD)
    splits = {name: str(local / file) for name, file in record["splits"].items()}
    return dataclasses.replace(CleanResult(**record), splits=splits, dir=str(local))


def run_search_trials(cfg: PipelineConfig, parent_run_id: str, study_name: str, optimizer_index: int) -> dict:
    """One optimizer of the training run's study: trials until it has search.trials; what this one ran."""
    if not cfg.search.storage:
        raise ValueError(
            "search-trials runs an optimizer of a shared study: the config needs search.storage (the "
            "training run that started it had one; a hand-made run must give the same config)"
        )
    name = optimizer_name()
    with tempfile.TemporaryDirectory(prefix="ftflow-search-") as tmp:
        run_dir = Path(tmp)
        data = fetch_trial_data(parent_run_id, run_dir / "data")
        study = open_search_study(cfg, run_dir, study_name, optimizer_index)
        before = {t.number for t in study.trials}
        optimize_trials(study, data, cfg, run_dir, parent_run_id, name)
        mine = [t for t in study.trials if t.number not in before and t.user_attrs.get("optimizer") == name]
    return {
        "study": study_name,
        "optimizer": name,
        "trials_run": [{"number": t.number, "state": t.state.name, "value": t.value} for t in mine],
        "study_finished": finished_count(study),
    }
