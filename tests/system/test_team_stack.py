"""The team's stack on PostgreSQL: `ftflow up --database URL` on a real server the session started, and `--postgres`.

One stack on the session's server (the `postgres` fixture, started as `ftflow up --postgres` starts
its own): a small model is trained and promoted through the served deployments, the service answers
with it and logs its predictions to PostgreSQL, and the monitor deployment reads them back. MLflow
proxies the artifacts, so the test process, a client, uses only the tracking URL. The password
reaches `ftflow up` as a `${NAME}` reference and shows nowhere: not in its output, nor in a log, nor
in a file of the stack's home, nor on a command line.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests import stack_support as ss

pytestmark = pytest.mark.slow
PASSWORD_VAR = "FTFLOW_TEST_PG_PASSWORD"
TEXTS = ["a wonderful, moving film", "dull and far too long", "fine", "the best thing this year", "awful"]


@pytest.fixture(scope="module")
def team_up(postgres, tmp_path_factory):
    """`ftflow up --database 'postgresql://ftflow:${FTFLOW_TEST_PG_PASSWORD}@127.0.0.1:PORT'`; stopped at the end."""
    db = postgres.database
    env = pytest.MonkeyPatch()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.setenv(key, ss.CREDENTIALS[key])
    url = f"postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}"
    stack = ss.UpProcess(
        tmp_path_factory.mktemp("team") / "ftflow",
        ss.ROOT / "configs" / "quickstart.yaml",
        args=("--database", url),
        env={PASSWORD_VAR: db.password},
    )
    yield stack
    stack.stop()
    env.undo()


@pytest.fixture(scope="module")
def trained(team_up, tmp_path_factory):
    """The manual run through the stack, then promote/manual: `stack-sentiment`'s champion, registered in PostgreSQL."""
    run = ss.trigger_manual_run(team_up, tmp_path_factory.mktemp("teamrun"))
    assert run["flow_run"]["state_type"] == "COMPLETED", f"{run['flow_run']['state']}\n{run['serve_log']}"
    dep = ss.read_deployment(team_up.prefect_api, "promote/manual")
    fr = ss.create_flow_run(team_up.prefect_api, dep["id"], {"model_name": "stack-sentiment"})
    fr = ss.wait_flow_run(team_up.prefect_api, fr["id"], 180)
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{team_up.log_tail('serve')}"
    return run


def test_the_stores_live_in_postgres_and_artifacts_go_through_the_tracking_server(team_up, trained, postgres):
    from mlflow.tracking import MlflowClient

    with postgres.database.connect("prefect") as conn:
        assert conn.execute("SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'").fetchone()[0] >= 2
    with postgres.database.connect("mlflow") as conn:
        aliases = dict(
            conn.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'stack-sentiment'")
        )
    assert aliases.get("champion") == int(trained["challenger"].version)
    c = MlflowClient(tracking_uri=team_up.mlflow_url, registry_uri=team_up.mlflow_url)
    run = c.get_run(trained["challenger"].run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri  # proxied, no shared folder
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"config.yaml", "model", "onnx"}
    assert list((team_up.home / "mlflow-artifacts").rglob("*.onnx"))  # kept in the stack's home


def test_predictions_are_logged_to_postgres_and_the_monitor_reads_them(team_up, trained, postgres, monkeypatch):
    from deploy.app import create_app
    from tests.support import running

    db = postgres.database
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_up.mlflow_url)
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", db.predictions_url)  # what `ftflow up` tells the service
    with running(create_app("stack-sentiment")) as base:  # the service: its prediction log flushes at shutdown
        r = httpx.post(f"{base}/predict", json={"texts": TEXTS}, timeout=60)
        assert r.status_code == 200, r.text
    with db.connect("predictions") as conn:
        rows = conn.execute(
            "SELECT count(*), min(model_version) FROM predictions WHERE model_name = 'stack-sentiment'"
        ).fetchone()
    assert rows == (len(TEXTS), trained["challenger"].version)
    # The served flows read the same log: `ftflow up` gave them the predictions database.
    dep = ss.read_deployment(team_up.prefect_api, "monitor/daily")
    fr = ss.create_flow_run(team_up.prefect_api, dep["id"], {"model_name": "stack-sentiment"})
    fr = ss.wait_flow_run(team_up.prefect_api, fr["id"], 240)
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{team_up.log_tail('serve')}"
    deadline = time.monotonic() + 30  # a run's last log lines land in batches, after its state says Completed
    while True:
        logs = httpx.post(
            f"{team_up.prefect_api}/logs/filter",
            auth=ss.AUTH,
            timeout=10,
            json={"logs": {"flow_run_id": {"any_": [fr["id"]]}}},
        ).json()
        if any(f"on {len(TEXTS)} rows" in entry["message"] for entry in logs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(f"on {len(TEXTS)} rows" in entry["message"] for entry in logs), [e["message"] for e in logs]


def test_the_password_shows_nowhere(team_up, trained, postgres):
    secret = postgres.password
    assert "PostgreSQL: postgresql+asyncpg://ftflow:***@" in "\n".join(team_up.lines)
    assert secret not in "\n".join(team_up.lines)
    for path in team_up.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for p in team_up.descendants():
        assert not any(secret in a for a in p.cmdline()), p.cmdline()


def test_up_postgres_starts_a_local_server_and_stops_it_with_the_stack():
    """`ftflow up --postgres --no-serve`: initdb in the home, the servers on it, everything stopped by SIGTERM."""
    import shutil

    import psutil

    from flows.ops.supervisor import port_in_use

    folder = Path(tempfile.mkdtemp(prefix="ftflow-up-pg-"))
    folder.chmod(0o755)  # run as root, the server runs as `postgres`, which must reach its folder
    try:
        up = ss.UpProcess(folder / "home", ss.ROOT / "configs" / "quickstart.yaml", args=("--postgres", "--no-serve"))
        text = "\n".join(up.lines)
        assert f"PostgreSQL in {folder / 'home' / 'postgres'}" in text and "starting PostgreSQL" in text
        assert (folder / "home" / "postgres" / "PG_VERSION").exists()
        servers = [p for p in up.descendants() if p.name() == "postgres"]
        assert servers and (os.geteuid() != 0 or servers[0].username() == "postgres")
        port = int(text.split("@127.0.0.1:")[1].split("/")[0])
        r = httpx.get(f"{up.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", auth=ss.AUTH, timeout=10)
        assert r.status_code == 200  # MLflow's store is the local server's `mlflow` database
        children = up.descendants()
        assert up.stop() == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert not port_in_use("127.0.0.1", port)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
