"""`ftflow up --workers 2` with two models, the whole loop on SQLite (the laptop) and on a real PostgreSQL.

One stack per database (module fixtures, parametrized): `sqlite` is the laptop layout (no `--database`:
SQLite stores, artifacts and the prediction log in the project's store); `postgres` is `--database` on
the session's server (the `postgres` fixture), its password a `${NAME}` reference, MLflow proxying the
artifacts. Each stack has two process workers and two small configs written as YAML, models
`workers-a` and `workers-b`: each model's deployments, schedule and automation are its own. Every flow
run below is a run of a deployment, created through the Prefect API as the UI's Quick run does (the
deployment's own defaults), that a worker of the process pool executes (the run carries the pool and
the worker's process, the worker's log names it):

1. both models are trained by runs of their `fine-tune/manual-<model>`, one per worker at the same time,
   each registering its own model only;
2. the test process is a client in a fresh working directory that holds none of the servers' folders: it
   uses the tracking URL only (on PostgreSQL the artifacts are `mlflow-artifacts:` URIs the server proxies,
   and the client writes nothing where it runs; on SQLite they stay in the laptop's shared store);
3. `promote/manual-workers-a` makes version 1 champion; the service (deploy.app, in this process) answers
   with it and logs its predictions: to PostgreSQL's `predictions` table (read with psycopg), or to the
   laptop's Parquet log;
4. feedback posted to the service's /feedback is found in the log;
5. `monitor/daily-workers-a` runs over workers-a's log and flags drift genuinely: the traffic is a shifted
   stream (SMS messages to a sentiment model, as tests/system/test_loop_e2e.py sends), compared with the
   champion's held-out split; feedback accuracy is set not to count (min_feedback_rows), so drift alone asks;
6. its event fires workers-a's automation, which creates a run of `retrain/on-drift-workers-a` that a worker
   runs: a new version of workers-a, trained with the feedback rows; workers-b's retrain deployment gets no
   run and workers-b keeps its one version.

On PostgreSQL only, the team's features: the stores are read in the team database directly; a search with
`search.parallel 2` runs its trials on both workers, its study in the stack's `optuna` database; the password
shows nowhere (output, files of the home, the workers' logs, command lines). Last on each stack, SIGTERM
stops the workers and pauses the schedules; the next `ftflow up` on the same home (and database) activates
them again. `ftflow up`'s refusals need no stack; `--postgres` (a local server) is test_team_stack.py's.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests import stack_support as ss

pytestmark = pytest.mark.slow
MODELS = ("workers-a", "workers-b")
A, B = MODELS
PASSWORD_VAR = "FTFLOW_TEST_PG_PASSWORD"
POOL = "ftflow-process"
SHIFTED_ROWS = 40
FEEDBACK_ROWS = 10
# Small windows (the held-out split has ~36 rows), as test_loop_e2e's; feedback accuracy never counts here.
MONITORING = (
    "monitoring.min_rows=20",
    "monitoring.reference_rows=50",
    "monitoring.embedding_rows=50",
    "monitoring.permutations=200",
    "monitoring.min_feedback_rows=1000",
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory):
    """`ftflow up --workers 2 --config workers-a.yaml --config workers-b.yaml` (`--database URL` on PostgreSQL).

    The test process then acts as a client in a fresh working directory, with the tracking URL only.
    """
    from tests.support import small_config

    kind = request.param
    tmp = tmp_path_factory.mktemp(f"workers-{kind}")
    paths = []
    for model in MODELS:
        cfg = small_config(tmp, *cfg_overrides(model))
        path = tmp / f"{model}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        paths.append(path)
    env = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.setenv(key, ss.CREDENTIALS[key])
    # The schedules are active: in a time zone where their hours are far off, none fires amid the steps.
    timezone = ss.far_from_the_crons()
    args = ["--workers", "2", "--config", str(paths[1]), "--timezone", timezone]
    up_env = {"PREFECT_WORKER_QUERY_SECONDS": "2"}  # a created run is picked up within seconds
    postgres = None
    if kind == "postgres":
        postgres = request.getfixturevalue("postgres")
        db = postgres.database
        args += ["--database", f"postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}"]
        up_env[PASSWORD_VAR] = db.password
    t0 = time.monotonic()
    up = ss.UpProcess(tmp / "ftflow", paths[0], args=tuple(args), env=up_env)
    # The client: a fresh folder, the stack's tracking URL; on PostgreSQL the log by a `${NAME}` reference too.
    client_dir = Path(tmp_path_factory.mktemp(f"client-{kind}"))
    env.chdir(client_dir)
    env.setenv("MLFLOW_TRACKING_URI", up.mlflow_url)
    env.setenv("FTFLOW_LOG_TEXTS", "1")  # the feedback rows are trained on: their texts are logged
    if postgres:
        db = postgres.database
        env.setenv(PASSWORD_VAR, db.password)
        env.setenv(
            "FTFLOW_PREDICTION_LOG", f"postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}/predictions"
        )
        env.setenv("FTFLOW_MLRUNS", str(client_dir / "mlruns"))  # not the session's store: nothing local to fall on
    yield {"kind": kind, "up": up, "postgres": postgres, "client_dir": client_dir, "t0": t0, "timezone": timezone}
    up.stop()
    env.undo()
    print(f"\n[{kind}] stack up to stop: {time.monotonic() - t0:.0f} s")


def cfg_overrides(model: str) -> list[str]:
    return [
        f"name={model}",
        f"registry.model_name={model}",
        "registry.experiment=workers",
        "export.quantize=false",
        *MONITORING,
    ]


def run_deployment(up: ss.UpProcess, name: str, parameters: dict | None = None) -> dict:
    """A run of deployment `name` with its own defaults (and `parameters` over them), created and waited for."""
    dep = ss.read_deployment(up.prefect_api, name)
    return ss.wait_flow_run(up.prefect_api, create(up, dep["id"], parameters or dep["parameters"])["id"], 420)


def create(up: ss.UpProcess, deployment_id: str, parameters: dict) -> dict:
    for _ in range(10):  # SQLite busy with the workers' polls answers 503, which Prefect's clients retry
        created = ss.create_flow_run(up.prefect_api, deployment_id, parameters)
        if getattr(created, "status_code", None) != 503:
            break
        time.sleep(1)
    assert isinstance(created, dict), created.text
    return created


def runs_of(up: ss.UpProcess, deployment_name: str) -> list[dict]:
    dep = ss.read_deployment(up.prefect_api, deployment_name)
    r = httpx.post(
        f"{up.prefect_api}/flow_runs/filter",
        auth=ss.AUTH,
        timeout=10,
        json={"flow_runs": {"deployment_id": {"any_": [dep["id"]]}}},
    )
    r.raise_for_status()
    return r.json()


def flow_run_logs(up: ss.UpProcess, flow_run_id: str) -> list[str]:
    r = httpx.post(
        f"{up.prefect_api}/logs/filter",
        auth=ss.AUTH,
        timeout=10,
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}},
    )
    r.raise_for_status()
    return [entry["message"] for entry in r.json()]


def assert_ran_on_a_worker(up: ss.UpProcess, fr: dict) -> None:
    worker_logs = {i: up.log_tail(f"worker-{i}", 5000) for i in (1, 2)}
    assert fr["state_type"] == "COMPLETED", f"{fr['name']}: {fr['state']}\n{worker_logs}"
    assert fr["work_pool_name"] == POOL and fr["infrastructure_pid"], fr
    assert any(fr["id"] in log for log in worker_logs.values()), (fr["id"], worker_logs)


def mlflow_client(up: ss.UpProcess):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=up.mlflow_url, registry_uri=up.mlflow_url)


@pytest.fixture(scope="module")
def trained(stack):
    """One run of each model's `fine-tune/manual-<model>`, created together, then `promote/manual-workers-a`."""
    up = stack["up"]
    t0 = time.monotonic()
    created = {}
    for model in MODELS:
        dep = ss.read_deployment(up.prefect_api, f"fine-tune/manual-{model}")
        created[model] = create(up, dep["id"], dep["parameters"])  # the UI's Quick run: the model's own config
    runs = {model: ss.wait_flow_run(up.prefect_api, fr["id"], ss.RUN_TIMEOUT_S) for model, fr in created.items()}
    train_s = time.monotonic() - t0
    promoted = run_deployment(up, f"promote/manual-{A}")
    return {"runs": runs, "promote": promoted, "train_s": train_s}


@pytest.fixture(scope="module")
def served(stack, trained):
    """The service on workers-a's champion answers a shifted stream; feedback on some of its answers."""
    from deploy.app import create_app
    from tasks.config import SourceConfig
    from tasks.data.collect import read_source
    from tests.support import running

    assert trained["promote"]["state_type"] == "COMPLETED", trained["promote"]["state"]
    texts = read_source(SourceConfig(kind="package", name="sms_spam")).sample(SHIFTED_ROWS, random_state=2)
    texts = texts["text"].tolist()
    answers = []
    with running(create_app(A, poll_seconds=0)) as base, httpx.Client(base_url=base, timeout=60) as client:
        for i in range(0, len(texts), 16):
            r = client.post("/predict", json={"texts": texts[i : i + 16]})
            assert r.status_code == 200, r.text
            answers += r.json()["predictions"]
        # Corrections: the opposite of each answer, so that they are fed back as they would be.
        flip = {"positive": "negative", "negative": "positive"}
        items = [{"request_id": a["request_id"], "label": flip[a["label"]]} for a in answers[:FEEDBACK_ROWS]]
        fed_back = client.post("/feedback", json={"items": items})
    # The service's prediction log flushes at shutdown: read after the `with`.
    return {"texts": texts, "answers": answers, "feedback": items, "feedback_response": fed_back}


@pytest.fixture(scope="module")
def monitored(stack, served):
    """`monitor/daily-workers-a` with its deployment's defaults, then the retrain run its event causes, waited for."""
    up = stack["up"]
    t0 = time.monotonic()
    monitor = run_deployment(up, f"monitor/daily-{A}")
    retrain_runs: list[dict] = []
    deadline = time.monotonic() + 120
    while monitor["state_type"] == "COMPLETED" and not retrain_runs and time.monotonic() < deadline:
        retrain_runs = runs_of(up, f"retrain/on-drift-{A}")
        time.sleep(1)
    retrain = ss.wait_flow_run(up.prefect_api, retrain_runs[0]["id"], 600) if retrain_runs else None
    return {"monitor": monitor, "retrain": retrain, "seconds": time.monotonic() - t0}


def test_far_from_the_crons_picks_a_zone_where_no_schedule_is_near():
    from zoneinfo import ZoneInfo

    at = dt.datetime(2026, 12, 5, 5, 50, tzinfo=dt.UTC)  # 10 minutes before the monitor's 06:00 UTC
    assert ss.far_from_the_crons(at) == "Asia/Tokyo"  # 14:50 there
    assert ss.far_from_the_crons(at.replace(hour=12)) == "UTC"
    for step in range(0, 24 * 60, 10):  # any time of day: a zone where neither 02:00 nor 06:00 is 90 minutes off
        when = at.replace(hour=step // 60, minute=step % 60)
        local = when.astimezone(ZoneInfo(ss.far_from_the_crons(when))).time()
        assert not (dt.time(0, 30) < local <= dt.time(2, 0) or dt.time(4, 30) < local <= dt.time(6, 0)), (when, local)


def test_up_prints_the_workers_and_each_models_deployments(stack):
    up = stack["up"]
    text = "\n".join(up.lines)
    assert "workers:      2 on process work pool 'ftflow-process'" in text
    for model in MODELS:
        assert f"fine-tune/manual-{model}" in text and f"retrain/on-drift-{model}" in text
    assert (up.home / "logs" / "worker-1.log").exists() and (up.home / "logs" / "worker-2.log").exists()


def test_each_models_deployments_its_schedule_and_automation_are_its_own(stack):
    from flows.deployments import NIGHTLY_CRON, deployment_names

    up = stack["up"]
    for model in MODELS:
        for name in deployment_names(model):
            dep = ss.read_deployment(up.prefect_api, name)
            assert dep["work_pool_name"] == "ftflow-process", name
            assert dep["job_variables"]["working_dir"] == str(ss.ROOT), name  # the code is the repository's
            directory = {"directory": str(ss.ROOT)}
            assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": directory}], name
        nightly = ss.read_deployment(up.prefect_api, f"fine-tune/nightly-{model}")
        assert nightly["parameters"]["config"]["registry"]["model_name"] == model
        assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [(NIGHTLY_CRON, True)]
        assert nightly["schedules"][0]["schedule"]["timezone"] == stack["timezone"]
        assert not nightly["paused"] and nightly["status"] == "READY"  # a worker polls for it
        retrain = ss.read_deployment(up.prefect_api, f"retrain/on-drift-{model}")
        automations = httpx.post(f"{up.prefect_api}/automations/filter", auth=ss.AUTH, timeout=10, json={}).json()
        [mine] = [a for a in automations if a["name"] == f"retrain-{model}-on-drift"]
        assert mine["trigger"]["match"]["prefect.resource.id"] == f"ftflow.model.{model}"
        assert [a["deployment_id"] for a in mine["actions"]] == [retrain["id"]]


def test_each_model_is_trained_by_a_worker_and_registers_itself(stack, trained):
    up = stack["up"]
    c = mlflow_client(up)
    for model, fr in trained["runs"].items():
        assert_ran_on_a_worker(up, fr)
        versions = c.search_model_versions(f"name='{model}'")
        assert [v.version for v in versions] == ["1"], (model, versions)
        # This model's version came from this model's run.
        assert c.get_run(versions[0].run_id).data.tags.get("prefect_flow_run_id") == fr["id"]
    assert "Downloading flow code" not in up.log_tail("worker-1", 5000) + up.log_tail("worker-2", 5000)  # in place
    assert "registered 17 deployments to work pool 'ftflow-process'" in up.log_tail("serve")
    assert_ran_on_a_worker(up, trained["promote"])
    assert c.get_model_version_by_alias(A, "champion").version == "1"
    if stack["kind"] == "postgres":  # the stores are the team database's, read there directly
        db = stack["postgres"].database
        with db.connect("prefect") as conn:
            ids = {str(r[0]) for r in conn.execute("SELECT id FROM flow_run WHERE state_type = 'COMPLETED'")}
        assert {fr["id"] for fr in trained["runs"].values()} | {trained["promote"]["id"]} <= ids
        with db.connect("mlflow") as conn:
            aliases = dict(conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", (A,)))
        assert aliases["champion"] == 1, aliases  # the champion, in the registry's own table
    # Scoring under log_prints once logged dill's bytecode (tasks/quiet.py, prints_to_stdout).
    assert "LOAD_GLOBAL" not in up.log_tail("worker-1", 5000) + up.log_tail("worker-2", 5000)
    print(f"\n[{stack['kind']}] both trainings: {trained['train_s']:.0f} s")


def test_both_workers_ran_a_run_at_the_same_time(stack, trained):
    """`--limit 1` each: two runs at once are one per worker, so neither waited for the other."""
    # Both workers may try a run (the other's claim aborts it); the run's own output is in its worker's log only.
    up = stack["up"]
    ran_on: dict[str, list[int]] = {}
    for model, fr in trained["runs"].items():
        finished = re.compile(rf"Flow run '{re.escape(fr['name'])}' - Finished in state Completed")
        ran_on[model] = [i for i in (1, 2) if finished.search(up.log_tail(f"worker-{i}", 5000))]
    assert sorted(ran_on.values()) == [[1], [2]], ran_on


def test_the_client_uses_the_tracking_url_only(stack, trained):
    up, client_dir = stack["up"], stack["client_dir"]
    assert Path.cwd() == client_dir
    assert not client_dir.is_relative_to(up.home) and not up.home.is_relative_to(client_dir)
    c = mlflow_client(up)
    run = c.get_run(c.get_model_version_by_alias(A, "champion").run_id)
    uri = run.info.artifact_uri
    if stack["kind"] == "postgres":
        assert uri.startswith("mlflow-artifacts:/"), uri  # proxied by the tracking server, no shared folder
        assert list((up.home / "mlflow-artifacts").rglob("*.onnx"))  # kept in the stack's home
    else:
        # The laptop: the artifacts stay in the project's store, which the runs and the service share.
        from tasks.platform.tracking import store_dir

        assert uri.startswith(store_dir().as_uri()), uri
        assert not Path(uri.removeprefix("file://")).is_relative_to(client_dir)
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"config.yaml", "model", "onnx"}


def test_predictions_and_feedback_are_logged(stack, served):
    assert served["feedback_response"].status_code == 200, served["feedback_response"].text
    assert served["feedback_response"].json() == {"stored": FEEDBACK_ROWS}
    ids = [a["request_id"] for a in served["answers"]]
    fed = {item["request_id"]: item["label"] for item in served["feedback"]}
    if stack["kind"] == "postgres":
        with stack["postgres"].database.connect("predictions") as conn:
            logged = conn.execute(
                "SELECT request_id, model_version, role, text FROM predictions WHERE model_name = %s", (A,)
            ).fetchall()
            feedback = dict(conn.execute("SELECT request_id, label FROM feedback").fetchall())
        assert sorted(r[0] for r in logged) == sorted(ids)
        assert {(r[1], r[2]) for r in logged} == {("1", "champion")}
        assert {r[3] for r in logged} == set(served["texts"])
        # Nothing local: the client's folder holds no store, no log.
        assert list(stack["client_dir"].iterdir()) == [], list(stack["client_dir"].iterdir())
    else:
        from tasks.monitoring.feedback import read_feedback
        from tasks.monitoring.prediction_log import read_predictions
        from tasks.platform.tracking import store_dir

        logged = read_predictions(model_name=A, location=str(store_dir()))
        assert sorted(logged["request_id"]) == sorted(ids)
        assert set(zip(logged["model_version"], logged["role"])) == {("1", "champion")}
        feedback = dict(read_feedback(str(store_dir()))[["request_id", "label"]].itertuples(index=False))
        assert list((store_dir() / "predictions").rglob("*.parquet"))  # the laptop's log: Parquet files by day
    assert {k: feedback.get(k) for k in fed} == fed


def test_the_monitor_runs_on_a_worker_and_flags_the_drift(stack, monitored):
    up, monitor = stack["up"], monitored["monitor"]
    assert_ran_on_a_worker(up, monitor)
    logs = flow_run_logs(up, monitor["id"])
    verdict = [m for m in logs if m.startswith(f"{A}: ")]
    assert verdict and f"retrain_needed on {SHIFTED_ROWS} rows" in verdict[0], logs
    assert "drift" in verdict[0] and "feedback accuracy" not in verdict[0], verdict
    assert any(m.startswith("retrain requested (event ") for m in logs), logs


def test_the_drift_retrains_that_model_only_on_a_worker(stack, monitored):
    up = stack["up"]
    retrain = monitored["retrain"]
    assert retrain is not None, f"no run of retrain/on-drift-{A}\n{up.log_tail('serve')}"
    assert_ran_on_a_worker(up, retrain)
    made_by = retrain["created_by"] or {}
    assert (made_by.get("type"), made_by.get("display_value")) == ("AUTOMATION", f"retrain-{A}-on-drift"), made_by
    assert retrain["parameters"]["reason"] and "drift" in retrain["parameters"]["reason"]
    assert len(runs_of(up, f"retrain/on-drift-{A}")) == 1
    assert runs_of(up, f"retrain/on-drift-{B}") == []  # the other model's automation did not fire
    c = mlflow_client(up)
    versions = {v.version: v for v in c.search_model_versions(f"name='{A}'")}
    assert sorted(versions) == ["1", "2"], versions
    first, second = (c.get_run(versions[v].run_id).data for v in ("1", "2"))
    assert second.tags.get("retrain_reason") == retrain["parameters"]["reason"]
    # Trained on the feedback too: its rows are a source of their own, read from the log the service wrote.
    assert f"feedback:{A}@" in second.tags["data_source"], second.tags["data_source"]
    assert int(second.params["data.raw_rows"]) == int(first.params["data.raw_rows"]) + FEEDBACK_ROWS
    assert [v.version for v in c.search_model_versions(f"name='{B}'")] == ["1"]
    print(f"\n[{stack['kind']}] monitor + retrain: {monitored['seconds']:.0f} s")


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # the team's feature: its study in the team database
def test_a_search_with_parallel_2_runs_its_trials_on_both_workers(stack, monitored, tmp_path):
    """search.parallel 2: the training run optimizes on one worker, a search-trials flow run on the other.

    After the loop's steps (`monitored`), so the versions they count are settled. The study is in the stack's
    `optuna` database, its password a `${NAME}` reference that each worker resolves.
    """
    from tests.support import small_config

    up, db = stack["up"], stack["postgres"].database
    cfg = small_config(
        tmp_path,
        f"name=workers-search-{stack['kind']}",
        f"registry.model_name={A}",
        "registry.experiment=workers-search",
        "export.quantize=false",
        # Trials of ~15 s on a worker's core: the optimizer flow run (a process start, ~30 s) finds some left.
        "training.max_steps=40",
        "training.eval_steps=20",
        "search.trials=4",
        "search.parallel=2",
        f"search.storage=postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}/optuna",
    )
    dep = ss.read_deployment(up.prefect_api, f"fine-tune/manual-{A}")
    created = ss.create_flow_run(up.prefect_api, dep["id"], {"config": cfg.model_dump(mode="json")})
    assert isinstance(created, dict), created.text
    fr = ss.wait_flow_run(up.prefect_api, created["id"], ss.RUN_TIMEOUT_S)
    logs = {i: up.log_tail(f"worker-{i}", 3000) for i in (1, 2)}
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{logs}"

    trials = httpx.post(
        f"{up.prefect_api}/flow_runs/filter",
        auth=ss.AUTH,
        timeout=10,
        json={"flows": {"name": {"any_": ["search-trials"]}}, "flow_runs": {"tags": {"all_": [cfg.name]}}},
    ).json()
    assert [t["state_type"] for t in trials] == ["COMPLETED"], trials
    assert trials[0]["work_pool_name"] == POOL

    # One worker ran the training run, the other the optimizer flow run, at the same time.
    def ran_on() -> dict:
        return {
            name: [
                i
                for i in (1, 2)
                if f"Flow run '{name}' - Finished in state Completed" in up.log_tail(f"worker-{i}", 5000)
            ]
            for name in (fr["name"], trials[0]["name"])
        }

    deadline = time.monotonic() + 30  # the API says Completed a moment before the worker's log does
    while sorted((ran := ran_on()).values()) != [[1], [2]] and time.monotonic() < deadline:
        time.sleep(1)
    assert sorted(ran.values()) == [[1], [2]], ran

    c = mlflow_client(up)
    experiment = c.get_experiment_by_name("workers-search").experiment_id
    run_id = next(r.info.run_id for r in c.search_runs([experiment], "tags.prefect_flow_run_id = '" + fr["id"] + "'"))
    children = c.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    by = {r.data.tags["search_optimizer"] for r in children}
    assert len(by) == 2 and any(trials[0]["id"] in b for b in by) and any(fr["id"] in b for b in by), by
    assert c.get_run(run_id).data.params["search.best.learning_rate"]  # the final model took the best values
    with db.connect("optuna") as conn:  # the study, the training run's own, holds the four trials
        states = [
            r[0]
            for r in conn.execute(
                "SELECT t.state FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = %s",
                (f"{cfg.name}-{run_id}",),
            )
        ]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, states


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)  # a password is the team database's
def test_the_password_shows_nowhere(stack):
    """It reached `ftflow up` and the workers as a `${NAME}` reference: not in its output, a file of its home, a log
    (the workers' included), nor on a command line; `ftflow up` prints the URL masked."""
    up, secret = stack["up"], stack["postgres"].database.password
    assert f"PostgreSQL: postgresql+asyncpg://{stack['postgres'].database.user}:***@" in "\n".join(up.lines)
    assert secret not in "\n".join(up.lines)
    files = [path for path in up.home.rglob("*") if path.is_file()]
    assert any(path.name == "worker-1.log" for path in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    for p in up.descendants():
        assert not any(secret in a for a in p.cmdline()), p.cmdline()


def test_sigterm_stops_the_workers_and_the_next_up_activates_the_schedules_again(stack):
    """Last here (the module's runs are done): SIGTERM pauses the schedules, stops every worker; the next start resumes."""
    import psutil

    up = stack["up"]
    children = up.descendants()
    workers = [p for p in children if "worker" in p.cmdline() and "ftflow-process" in p.cmdline()]
    assert len(workers) == 2, [p.cmdline() for p in children]
    assert up.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert "All deployments have been paused!" in up.log_tail("serve")
    up.start()  # the same home: the pool and the deployments are there, paused
    for model in MODELS:
        nightly = ss.read_deployment(up.prefect_api, f"fine-tune/nightly-{model}")
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
