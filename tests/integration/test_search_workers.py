"""Search across workers: optimizers in other processes share one Optuna study in the team database.

On the session's real PostgreSQL (`postgres`): the training run is one optimizer and a second one,
in its own process, is what a `search-trials` flow run executes (the clean splits downloaded from
the training run's MLflow artifacts into a folder of its own). Together they finish exactly
`search.trials` trials, each a child run of the training run; a second call resumes the study
and runs none. Without a deployment (`ftflow run`), search.parallel starts local processes. When the
training run's optimizer fails, the others are stopped: local processes ended, flow runs cancelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, prepare, small_config

pytestmark = pytest.mark.slow
TRIALS = 4
PASSWORD_VAR = "FTFLOW_TEST_OPTUNA_PASSWORD"
# The second optimizer as the search-trials flow's task runs it, in a process of its own.
OPTIMIZER = """
import json, sys
from tasks.config import PipelineConfig
from tasks.modelling.remote_search import run_search_trials
from tasks.platform import tracking
tracking.configure()
cfg = PipelineConfig.model_validate_json(open(sys.argv[1]).read())
print("ready", flush=True)
print(json.dumps(run_search_trials(cfg, sys.argv[2], sys.argv[3], 1)), flush=True)
"""


def tiny(tmp: Path, *overrides: str):
    return small_config(
        tmp,
        "data.max_rows=240",
        "training.eval_batch_size=64",
        "training.max_steps=4",
        "training.eval_steps=2",  # two evaluations a trial: the median pruner has something to compare
        f"search.trials={TRIALS}",
        "search.space={learning_rate: {low: 1.0e-6, high: 2.0e-4, log: true}, train_batch_size: {choices: [8, 16]}}",
        *overrides,
    )


@pytest.fixture(scope="module")
def storage(postgres):
    """A fresh database `optuna_tests` on the session's server; its URL with the password as a reference."""
    from flows.ops.postgres import ensure_databases

    db = postgres.database
    ensure_databases(db, ("optuna_tests",))
    env = pytest.MonkeyPatch()
    env.setenv(PASSWORD_VAR, db.password)
    yield f"postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}/optuna_tests"
    env.undo()


@pytest.fixture(scope="module")
def clean_ref(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    return prepare(tiny(tmp), tmp / "prep")


class ProcessOptimizer:
    """The launcher's handle on the optimizer process: `wait` ends it, keeps what it printed."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.report: dict = {}

    def wait(self) -> list[str]:
        out, err = self.proc.communicate(timeout=600)
        if self.proc.returncode:
            return [f"optimizer exited {self.proc.returncode}: {err[-3000:]}"]
        self.report = json.loads(out.strip().splitlines()[-1])
        return []


def launch_process_optimizer(tmp: Path, started: list):
    """A launcher like the train stage's: publish the splits to MLflow, start the optimizer, wait until it is ready."""
    from tasks.modelling.remote_search import publish_trial_data

    def launch(count, cfg, data, run_dir, run_id, name):
        assert count == 1
        publish_trial_data(data, run_id, tmp / "published")
        (tmp / "cfg.json").write_text(cfg.model_dump_json())  # a flow run's parameter: references, no password
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-c", OPTIMIZER, str(tmp / "cfg.json"), run_id, name],
            cwd=tmp,  # not the run folder, nor the repository: it shares no folder with the training run
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
        started.append(ProcessOptimizer(proc))
        return started[-1]

    return launch


def test_two_optimizers_share_one_study_and_stop_at_exactly_the_trials(clean_ref, storage, tmp_path):
    from tasks.modelling.search import search_hyperparameters
    from tasks.platform import tracking

    cfg = tiny(tmp_path, f"search.storage={storage}", "search.parallel=2", "name=shared-search")
    assert "${" in cfg.model_dump(mode="json")["search"]["storage"]  # what a flow run's parameter carries
    parent = tracking.start_run("tests-search-workers", "parent")
    started: list[ProcessOptimizer] = []
    t0 = time.monotonic()
    found = search_hyperparameters(
        clean_ref, cfg, tmp_path / "run", parent, launch_process_optimizer(tmp_path, started)
    )
    seconds = time.monotonic() - t0

    # The same record as a search in one process: metric, direction, best values and score, every trial.
    assert set(found) == {"metric", "direction", "best_value", "best_params", "trials"}
    assert json.loads((tmp_path / "run" / "search" / "summary.json").read_text()) == found
    numbers = [t["number"] for t in found["trials"]]
    assert len(numbers) == len(set(numbers)) == TRIALS, found["trials"]  # exactly the trials, none twice
    assert {t["state"] for t in found["trials"]} <= {"COMPLETE", "PRUNED"}
    assert set(found["best_params"]) == {"learning_rate", "train_batch_size"}

    c = tracking.client()
    children = c.search_runs(
        [c.get_run(parent).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert {r.info.run_id for r in children} == {t["mlflow_run_id"] for t in found["trials"]}
    assert all(r.info.status == "FINISHED" for r in children)
    # Each trial's run names the optimizer that ran it; both ran trials, the other from its own folder.
    by = {r.data.tags["search_optimizer"] for r in children}
    assert len(by) == 2, (by, seconds)
    other = started[0].report
    assert other["optimizer"] in by and other["trials_run"] and other["study_finished"] == TRIALS
    # A pruned trial is a finished run tagged with why (search.prune, the median of the shared study).
    states = {t["mlflow_run_id"]: t["state"] for t in found["trials"]}
    for r in children:
        assert ("optuna_pruned" in r.data.tags) == (states[r.info.run_id] == "PRUNED")
    assert {"train.parquet", "validation.parquet", "clean.json"} <= {
        Path(a.path).name for a in c.list_artifacts(parent, "search/data")
    }

    # The same run again (a resume): its study is complete, nothing is launched or trained.
    again = search_hyperparameters(
        clean_ref, cfg, tmp_path / "run", parent, launch_process_optimizer(tmp_path, started)
    )
    assert len(started) == 1 and [t["number"] for t in again["trials"]] == numbers
    assert again["best_value"] == found["best_value"]


def test_another_run_has_a_study_of_its_own(clean_ref, storage, tmp_path):
    import optuna

    from tasks.modelling.study import storage_url

    names = optuna.study.get_all_study_names(storage_url(storage)[0])
    assert all(name.startswith("shared-search-") for name in names) and len(names) == len(set(names))


def test_outside_a_deployment_the_other_optimizers_are_local_processes(clean_ref, tmp_path):
    """`ftflow run` with search.parallel 2 (no worker pool): a second optimizer process on this machine."""
    from tasks.modelling.search import tune_and_train
    from tasks.platform import tracking

    cfg = tiny(tmp_path, f"search.storage=sqlite:///{tmp_path / 'study.db'}", "search.parallel=2", "search.trials=3")
    parent = tracking.start_run("tests-search-workers", "local")
    result = tune_and_train(clean_ref, cfg, tmp_path / "run", parent)
    assert len(result.search["trials"]) == 3 and (Path(result.model_dir) / "model.safetensors").exists()
    assert {t["state"] for t in result.search["trials"]} <= {"COMPLETE", "PRUNED"}


def test_when_this_runs_optimizer_fails_its_local_optimizers_are_stopped(clean_ref, tmp_path, monkeypatch):
    """The training run's own optimizer raises (the fault, injected in this process only): the optimizer
    processes it started are ended at once (SIGTERM), not left filling a study nobody reads."""
    import signal

    from tasks.modelling import search

    started: list = []

    def launch(*args):
        started.append(search.start_local_optimizers(*args))
        return started[-1]

    def fail(*args, **kwargs):
        raise RuntimeError("this run's optimizer failed")

    monkeypatch.setattr(search, "optimize_trials", fail)
    cfg = tiny(tmp_path, f"search.storage=sqlite:///{tmp_path / 'study.db'}", "search.parallel=3")
    with pytest.raises(RuntimeError, match="this run's optimizer failed"):
        search.search_hyperparameters(clean_ref, cfg, tmp_path / "run", None, launch)
    [others] = started
    assert len(others.processes) == 2
    assert [p.exitcode for p in others.processes] == [-signal.SIGTERM] * 2  # ended by the stop, not finished


def test_stopping_the_optimizer_flow_runs_cancels_every_run_not_final(prefect_harness):
    """Under a deployment the other optimizers are flow runs: one no worker took is cancelled, a running one is
    set Cancelling (its worker ends the process), a finished one is left as it is."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running, Scheduled

    from tasks.stages import TrialFlowRuns

    @flow(name="search-trials-stand-in")
    def optimizer() -> None:
        """Never run: its flow runs are only created, in the states a search's optimizer runs can be in."""

    with get_client(sync_client=True) as client:
        runs = [client.create_flow_run(optimizer, state=state) for state in (Scheduled(), Running(), Completed())]
        TrialFlowRuns([r.id for r in runs]).stop()
        after = [client.read_flow_run(r.id).state for r in runs]
    assert [s.type.value if s else None for s in after] == ["CANCELLED", "CANCELLING", "COMPLETED"]
    assert "optimizer failed" in (after[0].message or "") and "optimizer failed" in (after[1].message or "")
