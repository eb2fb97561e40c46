"""The team database's plumbing without a server: URLs, references, what each child gets, the CLI's refusals."""

from __future__ import annotations

import pytest

from flows.ops.postgres import Database, parse_database_url

SECRET = "s3cret/with:odd@chars"


def test_a_server_url_gives_the_three_databases_with_their_drivers(monkeypatch):
    monkeypatch.setenv("TEAM_PG_PASSWORD", SECRET)
    db = parse_database_url("postgresql://team:${TEAM_PG_PASSWORD}@db.internal:6543?sslmode=require")
    assert (db.host, db.port, db.user, db.password, db.query) == (
        "db.internal",
        6543,
        "team",
        SECRET,
        "sslmode=require",
    )
    quoted = "s3cret%2Fwith%3Aodd%40chars"
    assert db.prefect_url == f"postgresql+asyncpg://team:{quoted}@db.internal:6543/prefect?sslmode=require"
    assert db.mlflow_url == f"postgresql+psycopg://team:{quoted}@db.internal:6543/mlflow?sslmode=require"
    assert db.predictions_url.endswith("@db.internal:6543/predictions?sslmode=require")
    assert SECRET not in repr(db) and quoted not in db.shown("mlflow") and ":***@" in db.shown("mlflow")
    assert parse_database_url("postgres://team@db").port == 5432  # no password: .pgpass or trust


@pytest.mark.parametrize(
    "url, problem",
    [
        ("mysql://u:p@db/x", "not a PostgreSQL URL"),
        ("postgresql://team:pw@db:5432/mlflow", "name the server only"),
        ("postgresql://db:5432", "give the user and the host"),
        ("postgresql://team:${NOT_SET_ANYWHERE_42}@db", "NOT_SET_ANYWHERE_42 is not set"),
    ],
)
def test_bad_server_urls_are_refused_with_the_password_masked(url, problem):
    with pytest.raises(ValueError, match=problem) as err:
        parse_database_url(url)
    assert ":pw@" not in str(err.value)


def test_the_urls_reach_the_servers_through_their_environment_not_their_command_lines(tmp_path):
    from flows.ops.stack import mlflow_service, prefect_service

    db = Database("127.0.0.1", 5999, "ftflow", SECRET)
    prefect = prefect_service(tmp_path, "127.0.0.1", 4300, tmp_path, database=db)
    assert prefect.env["PREFECT_API_DATABASE_CONNECTION_URL"] == db.prefect_url
    mlflow = mlflow_service(tmp_path / "store", "127.0.0.1", 5300, tmp_path, tmp_path, database=db)
    assert mlflow.env["MLFLOW_BACKEND_STORE_URI"] == db.mlflow_url
    assert "--serve-artifacts" in mlflow.argv and "mlflow-artifacts:/" in mlflow.argv
    assert str(tmp_path / "mlflow-artifacts") in mlflow.argv  # the proxy keeps them in the stack's home
    for svc in (prefect, mlflow):
        assert not any("s3cret" in a for a in svc.argv), svc.argv
    # The laptop path is unchanged: SQLite files, a file artifact root, no database in the environment.
    sqlite = mlflow_service(tmp_path / "store", "127.0.0.1", 5300, tmp_path, tmp_path)
    assert "MLFLOW_BACKEND_STORE_URI" not in sqlite.env and "--serve-artifacts" not in sqlite.argv
    assert any(a.startswith("sqlite:///") for a in sqlite.argv)
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in prefect_service(tmp_path, "127.0.0.1", 4300, tmp_path).env


def test_up_refuses_both_database_options_and_a_bad_url_before_starting_anything(capsys, monkeypatch):
    import argparse

    from flows.ops.stack import CREDENTIAL_VARS

    # The session's `up` fixture sets half of these for its clients; this refusal is about the URL alone.
    for key in CREDENTIAL_VARS:
        monkeypatch.delenv(key, raising=False)

    from flows.ops.up_cli import add_up_command

    parser = argparse.ArgumentParser()
    add_up_command(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--postgres", "--database", "postgresql://u@db"])
    assert "not allowed with argument" in capsys.readouterr().err
    args = parser.parse_args(["up", "--database", "postgresql://u:pw@db/mlflow"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "name the server only" in err and ":pw@" not in err and "Traceback" not in err
