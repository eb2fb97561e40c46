"""`ftflow migrate`: a small laptop store copied into another SQLite store and into PostgreSQL, resumed after a
failure part-way, and a second migrate that copies nothing."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from tasks.migrate import FROM_TAG, MigrationError, migrate_store

MODEL = "migrate-test-model"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    from tasks.platform.tracking import create_sqlite_store

    if uri.startswith("sqlite:///"):
        create_sqlite_store(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A laptop store: 3 runs (one nested) with metric histories, an artifact, a model with 2 versions and a champion,
    and a prediction log with feedback."""
    from mlflow.entities import Metric, Param

    from tasks.monitoring.feedback import FEEDBACK, FEEDBACK_SCHEMA
    from tasks.monitoring.prediction_log import open_sink, prediction_record

    folder = tmp_path_factory.mktemp("laptop") / "mlruns"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    c = _client(uri)
    exp = c.create_experiment("fine-tune", artifact_location=(folder / "artifacts").as_uri(), tags={"team": "nlp"})
    runs = []
    for i in range(3):
        tags = {"config": f"c{i}"} | ({"mlflow.parentRunId": runs[0]} if i == 2 else {})
        run = c.create_run(exp, run_name=f"run-{i}", tags=tags, start_time=1_700_000_000_000 + i)
        rid = run.info.run_id
        c.log_batch(
            rid,
            metrics=[Metric("loss", 1.0 / (s + 1 + i), 1_700_000_000_000 + s, s) for s in range(5)]
            + [Metric("f1", 0.5 + i / 10, 1_700_000_001_000, 0)],
            params=[Param("lr", str(1e-5 * (i + 1)))],
        )
        model = folder.parent / f"model{i}"
        model.mkdir()
        (model / "MLmodel").write_text("flavors: {}\n")
        (model / "weights.txt").write_text(f"weights {i}\n")
        c.log_artifacts(rid, str(model), "model")
        c.set_terminated(rid, "FINISHED" if i != 1 else "FAILED", end_time=1_700_000_100_000 + i)
        runs.append(rid)
    c.create_registered_model(MODEL, tags={"owner": "me"}, description="a test model")
    for rid in runs[:2]:
        c.create_model_version(MODEL, source=f"{c.get_run(rid).info.artifact_uri}/model", run_id=rid, tags={"k": rid})
    c.set_registered_model_alias(MODEL, "champion", "2")
    c.set_registered_model_alias(MODEL, "challenger", "1")
    when = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    answer = {"label": "positive", "score": 0.9, "scores": {"positive": 0.9, "negative": 0.1}}
    rows = [
        prediction_record(
            answer, f"text {i}", MODEL, "2", 5.0, request_id=f"req-{i}", when=when + dt.timedelta(minutes=i)
        )
        for i in range(5)
    ]
    open_sink(location=str(folder)).write(rows)
    open_sink(FEEDBACK, FEEDBACK_SCHEMA, str(folder)).write(
        [{"request_id": "req-0", "label": "negative", "time": when + dt.timedelta(hours=1)}]
    )
    return {"uri": uri, "folder": folder, "runs": runs}


def _summary(uri: str) -> dict:
    """What a store holds, keyed by the source run id where a run was migrated (its own id otherwise)."""
    from mlflow.entities import ViewType

    c = _client(uri)
    exp = c.get_experiment_by_name("fine-tune")
    runs = {}
    for r in c.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY):
        key = r.data.tags.get(FROM_TAG, r.info.run_id)
        assert key not in runs, "a run was copied twice"
        history = {
            k: [(m.value, m.step, m.timestamp) for m in c.get_metric_history(r.info.run_id, k)] for k in r.data.metrics
        }
        tags = {k: v for k, v in r.data.tags.items() if not k.startswith(("ftflow.", "mlflow.parentRunId"))}
        parent = r.data.tags.get("mlflow.parentRunId")
        if parent:
            parent = c.get_run(parent).data.tags.get(FROM_TAG, parent)
        artifacts = sorted(f.path for f in c.list_artifacts(r.info.run_id, "model"))
        runs[key] = {
            "name": r.info.run_name,
            "status": r.info.status,
            "times": (r.info.start_time, r.info.end_time),
            "params": r.data.params,
            "history": history,
            "tags": tags,
            "parent": parent,
            "artifacts": artifacts,
        }
    model = c.get_registered_model(MODEL)
    versions = sorted(c.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    return {
        "runs": runs,
        "model": (model.description, dict(model.tags), {k: str(v) for k, v in model.aliases.items()}),
        "versions": [(v.version, {k: t for k, t in v.tags.items() if k != FROM_TAG}) for v in versions],
    }


def _log(location: str) -> dict:
    from tasks.migrate import log_tables
    from tasks.monitoring.prediction_log import open_sink

    return {t: len(open_sink(t, s, location).read()) for t, s in log_tables()}


def _same(src: dict, dst: dict) -> None:
    assert dst["runs"].keys() == src["runs"].keys()
    for key, run in src["runs"].items():
        assert dst["runs"][key] == run
    assert dst["model"] == src["model"]
    assert [t for _, t in dst["versions"]] == [t for _, t in src["versions"]]


def test_migrates_into_sqlite_and_a_second_run_copies_nothing(source, tmp_path):
    import mlflow.artifacts

    dst_uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    dst_log = f"sqlite:///{tmp_path / 'log.db'}"
    report = migrate_store(source["uri"], dst_uri, destination_log=dst_log)
    assert report.copied["runs"] == 3 and report.copied["metrics"] == 18 and report.copied["versions"] == 2
    assert report.copied["aliases"] == 2 and report.copied["log rows"] == 6 and report.copied["artifacts"] == 6
    src, dst = _summary(source["uri"]), _summary(dst_uri)
    _same(src, dst)
    assert _log(dst_log) == _log(str(source["folder"]))
    # The champion's files are read from the migrated run, not the laptop's folder.
    c = _client(dst_uri)
    champion = c.get_model_version_by_alias(MODEL, "champion")
    assert str(tmp_path) in champion.source and champion.run_id != source["runs"][1]
    text = mlflow.artifacts.load_text(f"{champion.source}/weights.txt")
    assert text == "weights 1\n"

    again = migrate_store(source["uri"], dst_uri, destination_log=dst_log)
    assert not any(again.copied.values()), again.copied
    assert again.skipped == {k: report.copied[k] + report.skipped[k] for k in report.copied}
    assert _summary(dst_uri) == dst


def test_a_failed_migrate_resumes_without_duplicates(source, tmp_path):
    dst_uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    seen = []

    def fail_on_second_run(stage: str, run_id: str) -> None:
        seen.append(stage)
        if stage == "created" and seen.count("created") == 2:
            raise OSError("disk full (simulated)")

    def fail_after_a_version(stage: str, what: str) -> None:
        if stage == "version":
            raise OSError("connection lost (simulated)")

    with pytest.raises(MigrationError, match="resumes"):
        migrate_store(source["uri"], dst_uri, checkpoint=fail_on_second_run)
    # The second try copies the runs left and stops after the model's first version ...
    with pytest.raises(MigrationError, match="resumes"):
        migrate_store(source["uri"], dst_uri, checkpoint=fail_after_a_version)
    # ... the third finishes: the first run and version are not copied again.
    report = migrate_store(source["uri"], dst_uri)
    assert report.skipped["runs"] == 3 and report.copied["runs"] == 0
    assert report.skipped["versions"] == 1 and report.copied["versions"] == 1 and report.copied["aliases"] == 2
    _same(_summary(source["uri"]), _summary(dst_uri))
    # The copy the first try left incomplete (the second run, made but not filled) is in MLflow's trash.
    from mlflow.entities import ViewType

    c = _client(dst_uri)
    trash = c.search_runs([c.get_experiment_by_name("fine-tune").experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.data.tags[FROM_TAG] for r in trash] == [source["runs"][1]]


def test_migrates_into_postgres_with_a_referenced_password(source, postgres, tmp_path, monkeypatch):
    name = "migrate_mlflow"
    with postgres.database.connect() as conn:
        conn.autocommit = True
        for db in (name, "migrate_log"):
            conn.execute(f"DROP DATABASE IF EXISTS {db}")
            conn.execute(f"CREATE DATABASE {db}")
    monkeypatch.setenv("FTFLOW_T_PG_PASSWORD", postgres.password)
    dst_uri = postgres.database.url(name).replace(postgres.password, "${FTFLOW_T_PG_PASSWORD}")
    dst_log = postgres.database.url("migrate_log").replace(postgres.password, "${FTFLOW_T_PG_PASSWORD}")
    # A PostgreSQL backend store keeps no files: the experiments' artifacts go where --to-artifacts says ...
    with pytest.raises(MigrationError, match="--to-artifacts") as refused:
        migrate_store(source["uri"], postgres.database.url(name), destination_log=dst_log)
    assert postgres.password not in str(refused.value)
    files = (tmp_path / "team-artifacts").as_uri()
    report = migrate_store(source["uri"], dst_uri, destination_log=dst_log, destination_artifacts=files)
    assert report.copied["runs"] == 3
    real = postgres.database.url(name)
    _same(_summary(source["uri"]), _summary(real))
    champion = _client(real).get_model_version_by_alias(MODEL, "champion")
    assert champion.source.startswith(files)
    assert (
        tmp_path / "team-artifacts" / champion.run_id / "artifacts" / "model" / "weights.txt"
    ).read_text() == "weights 1\n"
    assert _log(postgres.database.url("migrate_log")) == _log(str(source["folder"]))
    again = migrate_store(source["uri"], dst_uri, destination_log=dst_log, destination_artifacts=files)
    assert not any(again.copied.values())


def test_the_command_prints_counts_and_masks_passwords(source, tmp_path, capsys, monkeypatch):
    from flows.ops.cli import main

    dst = f"sqlite:///{tmp_path / 'cli' / 'mlflow.db'}"
    assert main(["migrate", "--from", source["uri"], "--to", dst]) == 0
    out = capsys.readouterr().out
    assert "runs                3        0" in out and "versions            2        0" in out
    assert "prediction log at" in out and "not copied" in out  # no --to-log: said, not silently dropped
    assert main(["migrate", "--from", source["uri"], "--to", dst]) == 0
    assert "runs                0        3" in capsys.readouterr().out

    # A server that refuses the connection: the error names it with the password masked.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("FTFLOW_T_MIGRATE_PW", "hunter2-secret")
    for to in ("http://ops:hunter2-secret@127.0.0.1:9/", "http://ops:${FTFLOW_T_MIGRATE_PW}@127.0.0.1:9/"):
        assert main(["migrate", "--from", source["uri"], "--to", to]) == 1
        err = capsys.readouterr().err
        assert "error: migrating" in err and "hunter2" not in err, err
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert main(["migrate", "--from", f"sqlite:///{missing}", "--to", dst]) == 1
    assert "no MLflow store at" in capsys.readouterr().err and not missing.parent.exists()
    monkeypatch.delenv("FTFLOW_T_MIGRATE_PW")
    assert main(["migrate", "--from", source["uri"], "--to", "http://ops:${FTFLOW_T_MIGRATE_PW}@127.0.0.1:9/"]) == 1
    assert "FTFLOW_T_MIGRATE_PW is not set" in capsys.readouterr().err


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory):
    """A classification serving bundle (the packaged MiniLM, an untrained head) exported to ONNX."""
    from tests.support import export_classifier_bundle

    return export_classifier_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.mark.parametrize("destination", ["sqlite", "server"])
def test_a_migrated_onnx_champion_answers_as_before(destination, onnx_bundle, tmp_path, monkeypatch, request):
    """A registered serving bundle (the layout register.py logs) moved to another store, or through the team's
    server into PostgreSQL, loads from there through the registry and answers identically."""
    import shutil

    from tasks.inference.predictor import OnnxPredictor
    from tasks.registry.register import download_bundle

    model = tmp_path / "model"
    shutil.copytree(onnx_bundle, model / "artifacts" / "bundle")
    (model / "MLmodel").write_text(
        "flavors:\n  python_function:\n    artifacts:\n      bundle:\n        path: artifacts/bundle\n"
    )
    src_uri = f"sqlite:///{tmp_path / 'laptop' / 'mlflow.db'}"
    c = _client(src_uri)
    exp = c.create_experiment("serving", artifact_location=(tmp_path / "laptop" / "artifacts").as_uri())
    rid = c.create_run(exp, run_name="trained").info.run_id
    c.log_artifacts(rid, str(model), "model")
    c.set_terminated(rid)
    c.create_registered_model("migrate-onnx")
    c.create_model_version("migrate-onnx", source=f"{c.get_run(rid).info.artifact_uri}/model", run_id=rid)
    c.set_registered_model_alias("migrate-onnx", "champion", "1")

    if destination == "server":
        dst_uri = request.getfixturevalue("team_server")["url"]
        monkeypatch.chdir(tmp_path / "model")  # a folder that cannot see the server's files
    else:
        dst_uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    migrate_store(src_uri, dst_uri)
    shutil.rmtree(tmp_path / "laptop" / "artifacts")  # the laptop's files are gone: the team's copy serves
    monkeypatch.setenv("MLFLOW_TRACKING_URI", dst_uri)
    champion = _client(dst_uri).get_model_version_by_alias("migrate-onnx", "champion")
    served = download_bundle("migrate-onnx", champion.version, tmp_path / "served")
    texts = ["a fine film", "dull and too long", "okay"]
    assert OnnxPredictor(served).predict(texts) == OnnxPredictor(onnx_bundle).predict(texts)


@pytest.fixture
def team_server(postgres, tmp_path):
    """An MLflow server as `ftflow up --database` runs it: PostgreSQL backend store, artifacts proxied."""
    import subprocess
    import sys
    import time
    import urllib.request

    from flows.ops.supervisor import free_port

    name = "migrate_server"
    with postgres.database.connect() as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": postgres.database.url(name)}
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--serve-artifacts",
        "--default-artifact-root",
        "mlflow-artifacts:/",
    ]
    argv += ["--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "mlflow.log", "wb") as log:
        proc = subprocess.Popen([*argv, "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()[
                    -3000:
                ]
                time.sleep(0.5)
        yield {"url": url, "backend": postgres.database.url(name), "artifacts": tmp_path / "server-artifacts"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_migrates_into_a_tracking_server_with_proxied_artifacts(source, team_server, tmp_path, monkeypatch):
    """The team's route: through the server's URL, from a folder that cannot see the server's files."""

    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    report = migrate_store(source["uri"], team_server["url"])
    assert report.copied["runs"] == 3 and report.copied["versions"] == 2 and report.copied["aliases"] == 2
    _same(_summary(source["uri"]), _summary(team_server["url"]))
    champion = _client(team_server["url"]).get_model_version_by_alias(MODEL, "champion")
    assert champion.source.startswith("mlflow-artifacts:/")
    got = _client(team_server["url"]).download_artifacts(champion.run_id, "model/weights.txt", str(tmp_path))
    assert Path(got).read_text() == "weights 1\n"
    assert list(team_server["artifacts"].rglob("weights.txt"))  # stored by the server, not the client
    assert not list(client_dir.rglob("*"))
    again = migrate_store(source["uri"], team_server["url"])
    assert not any(again.copied.values())


def test_a_database_log_migrates_into_a_folder_and_its_source_is_left_as_it_was(source, tmp_path):
    """The log's other direction (SQL source, Parquet destination); a table the source lacks is not made there."""
    import sqlalchemy as sa

    from tasks.migrate import MigrationReport, copy_log

    db = f"sqlite:///{tmp_path / 'log.db'}"
    first = MigrationReport()
    copy_log(str(source["folder"]), db, first)
    assert first.copied["log rows"] == 6
    with sa.create_engine(db).begin() as conn:
        conn.execute(sa.text("DROP TABLE feedback"))
    report = MigrationReport()
    copy_log(db, str(tmp_path / "folder"), report)
    assert report.copied["log rows"] == 5
    assert not sa.inspect(sa.create_engine(db)).has_table("feedback")
    assert _log(str(tmp_path / "folder"))["predictions"] == 5
    again = MigrationReport()
    copy_log(db, str(tmp_path / "folder"), again)
    assert again.copied["log rows"] == 0 and again.skipped["log rows"] == 5
