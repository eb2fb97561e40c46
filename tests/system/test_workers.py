"""`ftflow up --workers 2` with two configs: each model's deployments run on the stack's Prefect workers.

One real stack on loopback (tests/stack_support.py), two small configs written as YAML (two models,
`workers-a` and `workers-b`): a run of each model's `fine-tune/manual-<model>` is created through the
Prefect API with its deployment's own defaults (the UI's Quick run), and a worker of the
process pool executes it (the run carries the pool and the worker's process, the worker's log names
it). Each run registers a version of its own model only.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
import yaml

from tests import stack_support as ss

pytestmark = pytest.mark.slow
MODELS = ("workers-a", "workers-b")


@pytest.fixture(scope="module")
def workers_up(tmp_path_factory):
    """`ftflow up --workers 2 --config a.yaml --config b.yaml`, the configs shrunk to train in seconds."""
    from tests.support import small_config

    tmp = tmp_path_factory.mktemp("workers")
    paths = []
    for model in MODELS:
        cfg = small_config(
            tmp, f"name={model}", f"registry.model_name={model}", "registry.experiment=workers", "export.quantize=false"
        )
        path = tmp / f"{model}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        paths.append(path)
    env = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.setenv(key, ss.CREDENTIALS[key])
    stack = ss.UpProcess(
        tmp / "ftflow",
        paths[0],
        args=("--workers", "2", "--config", str(paths[1])),
        env={"PREFECT_WORKER_QUERY_SECONDS": "2"},  # a created run is picked up within seconds
    )
    yield stack
    stack.stop()
    env.undo()


@pytest.fixture(scope="module")
def runs(workers_up):
    """One run of each model's training deployment, created together (one per worker), waited for."""
    created = {}
    for model in MODELS:
        dep = ss.read_deployment(workers_up.prefect_api, f"fine-tune/manual-{model}")
        # The Quick run of the UI: the deployment's own defaults, that is its config's model.
        for _ in range(10):  # SQLite busy with the workers' polls answers 503, which Prefect's clients retry
            created[model] = ss.create_flow_run(workers_up.prefect_api, dep["id"], dep["parameters"])
            if getattr(created[model], "status_code", None) != 503:
                break
            time.sleep(1)
        assert isinstance(created[model], dict), created[model].text
    t0 = time.monotonic()
    done = {
        model: ss.wait_flow_run(workers_up.prefect_api, fr["id"], ss.RUN_TIMEOUT_S) for model, fr in created.items()
    }
    return {"runs": done, "seconds": time.monotonic() - t0}


def test_up_prints_the_workers_and_each_models_deployments(workers_up):
    text = "\n".join(workers_up.lines)
    assert "workers:      2 on process work pool 'ftflow-process'" in text
    for model in MODELS:
        assert f"fine-tune/manual-{model}" in text and f"retrain/on-drift-{model}" in text
    assert (workers_up.home / "logs" / "worker-1.log").exists() and (workers_up.home / "logs" / "worker-2.log").exists()


def test_each_models_deployments_its_schedule_and_automation_are_its_own(workers_up):
    from flows.deployments import NIGHTLY_CRON, deployment_names

    for model in MODELS:
        for name in deployment_names(model):
            dep = ss.read_deployment(workers_up.prefect_api, name)
            assert dep["work_pool_name"] == "ftflow-process", name
            assert dep["job_variables"]["working_dir"] == str(ss.ROOT), name  # the code is the repository's
            directory = {"directory": str(ss.ROOT)}
            assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": directory}], name
        nightly = ss.read_deployment(workers_up.prefect_api, f"fine-tune/nightly-{model}")
        assert nightly["parameters"]["config"]["registry"]["model_name"] == model
        assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [(NIGHTLY_CRON, True)]
        assert not nightly["paused"] and nightly["status"] == "READY"  # a worker polls for it
        retrain = ss.read_deployment(workers_up.prefect_api, f"retrain/on-drift-{model}")
        automations = httpx.post(
            f"{workers_up.prefect_api}/automations/filter", auth=ss.AUTH, timeout=10, json={}
        ).json()
        [mine] = [a for a in automations if a["name"] == f"retrain-{model}-on-drift"]
        assert mine["trigger"]["match"]["prefect.resource.id"] == f"ftflow.model.{model}"
        assert [a["deployment_id"] for a in mine["actions"]] == [retrain["id"]]


def test_each_models_training_runs_on_a_worker_and_registers_that_model(workers_up, runs):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=workers_up.mlflow_url, registry_uri=workers_up.mlflow_url)
    worker_logs = {i: workers_up.log_tail(f"worker-{i}", 2000) for i in (1, 2)}
    for model, fr in runs["runs"].items():
        assert fr["state_type"] == "COMPLETED", f"{model}: {fr['state']}\n{worker_logs}"
        assert fr["work_pool_name"] == "ftflow-process" and fr["infrastructure_pid"], fr
        assert any(fr["id"] in log for log in worker_logs.values()), (fr["id"], worker_logs)
        assert "Downloading flow code" not in str(worker_logs)  # run in the repository, not a copy of it
        versions = c.search_model_versions(f"name='{model}'")
        run_ids = {c.get_run(v.run_id).data.tags.get("prefect_flow_run_id") for v in versions}
        assert fr["id"] in run_ids, (model, run_ids)  # this model's version came from this model's run
    other = {m: {v.run_id for v in c.search_model_versions(f"name='{m}'")} for m in MODELS}
    assert not other[MODELS[0]] & other[MODELS[1]]  # no run registered into the other model
    assert "registered 17 deployments to work pool 'ftflow-process'" in workers_up.log_tail("serve")


def test_both_workers_ran_a_run_at_the_same_time(workers_up, runs):
    """`--limit 1` each: two runs at once are one per worker, so neither waited for the other."""
    # Both workers may try a run (the other's claim aborts it); the run's own output is in its worker's log only.
    ran_on: dict[str, list[int]] = {}
    for model, fr in runs["runs"].items():
        finished = re.compile(rf"Flow run '{re.escape(fr['name'])}' - Finished in state Completed")
        ran_on[model] = [i for i in (1, 2) if finished.search(workers_up.log_tail(f"worker-{i}", 2000))]
    assert sorted(ran_on.values()) == [[1], [2]], ran_on


def test_a_search_with_parallel_2_runs_its_trials_on_both_workers(workers_up, tmp_path):
    """search.parallel 2: the training run optimizes on one worker, a search-trials flow run on the other."""
    from mlflow.tracking import MlflowClient

    from tests.support import small_config

    cfg = small_config(
        tmp_path,
        "name=workers-search",
        "registry.model_name=workers-a",
        "registry.experiment=workers",
        "export.quantize=false",
        # Trials of ~15 s on a worker's core: the optimizer flow run (a process start, ~30 s) finds some left.
        "training.max_steps=40",
        "training.eval_steps=20",
        "search.trials=4",
        "search.parallel=2",
        f"search.storage=sqlite:///{tmp_path / 'study.db'}",
    )
    dep = ss.read_deployment(workers_up.prefect_api, "fine-tune/manual-workers-a")
    created = ss.create_flow_run(workers_up.prefect_api, dep["id"], {"config": cfg.model_dump(mode="json")})
    assert isinstance(created, dict), created.text
    fr = ss.wait_flow_run(workers_up.prefect_api, created["id"], ss.RUN_TIMEOUT_S)
    logs = {i: workers_up.log_tail(f"worker-{i}", 3000) for i in (1, 2)}
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{logs}"

    trials = httpx.post(
        f"{workers_up.prefect_api}/flow_runs/filter",
        auth=ss.AUTH,
        timeout=10,
        json={"flows": {"name": {"any_": ["search-trials"]}}, "flow_runs": {"tags": {"all_": ["workers-search"]}}},
    ).json()
    assert [t["state_type"] for t in trials] == ["COMPLETED"], trials
    assert trials[0]["work_pool_name"] == "ftflow-process"

    # One worker ran the training run, the other the optimizer flow run, at the same time.
    def ran_on() -> dict:
        return {
            name: [
                i
                for i in (1, 2)
                if f"Flow run '{name}' - Finished in state Completed" in workers_up.log_tail(f"worker-{i}", 5000)
            ]
            for name in (fr["name"], trials[0]["name"])
        }

    deadline = time.monotonic() + 30  # the API says Completed a moment before the worker's log does
    while sorted((ran := ran_on()).values()) != [[1], [2]] and time.monotonic() < deadline:
        time.sleep(1)
    assert sorted(ran.values()) == [[1], [2]], ran

    c = MlflowClient(tracking_uri=workers_up.mlflow_url)
    run_id = next(
        r.info.run_id
        for r in c.search_runs(
            [c.get_experiment_by_name("workers").experiment_id], "tags.prefect_flow_run_id = '" + fr["id"] + "'"
        )
    )
    children = c.search_runs(
        [c.get_experiment_by_name("workers").experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
    )
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    by = {r.data.tags["search_optimizer"] for r in children}
    assert len(by) == 2 and any(trials[0]["id"] in b for b in by) and any(fr["id"] in b for b in by), by
    assert c.get_run(run_id).data.params["search.best.learning_rate"]  # the final model took the best values


def test_sigterm_stops_the_workers_and_the_next_up_activates_the_schedules_again(workers_up):
    """Last here (the module's runs are done): SIGTERM pauses the schedules, stops every worker; the next start resumes."""
    import psutil

    children = workers_up.descendants()
    workers = [p for p in children if "worker" in p.cmdline() and "ftflow-process" in p.cmdline()]
    assert len(workers) == 2, [p.cmdline() for p in children]
    assert workers_up.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert "All deployments have been paused!" in workers_up.log_tail("serve")
    workers_up.start()  # the same home: the pool and the deployments are there, paused
    for model in MODELS:
        nightly = ss.read_deployment(workers_up.prefect_api, f"fine-tune/nightly-{model}")
        assert not nightly["paused"] and [s["active"] for s in nightly["schedules"]] == [True]


@pytest.mark.parametrize(
    "args, problem",
    [
        (("--config", "configs/quickstart.yaml", "--config", "configs/quickstart.yaml"), "both register the model"),
        (("--workers", "2", "--no-serve"), "--workers runs the deployments, --no-serve starts none"),
        (("--workers", "-1"), "--workers -1"),
    ],
)
def test_up_refuses_one_model_twice_and_workers_without_deployments_before_starting_anything(args, problem):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "flows.ops.cli", "up", "--prefect-port", "0", "--mlflow-port", "0", *args],
        cwd=ss.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and problem in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "starting" not in proc.stdout
