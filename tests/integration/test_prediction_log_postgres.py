"""The prediction log and feedback on a real PostgreSQL (the session's `postgres` fixture), as `ftflow up --postgres` keeps them."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from tasks.monitoring.feedback import feedback_rows, record_feedback
from tasks.monitoring.prediction_log import PredictionLogger, SqlSink, open_sink, prediction_record, read_predictions

UTC = dt.UTC
ANSWER = {"label": "fresh", "score": 0.9, "scores": {"fresh": 0.9, "rotten": 0.1}}
pytestmark = pytest.mark.slow


def record(i: int, when: dt.datetime | None = None) -> dict:
    return prediction_record(
        ANSWER, f"text {i}", "m", "3", latency_ms=1.5, request_id=f"r{i}", when=when, keep_text=True
    )


@pytest.fixture
def location(postgres, monkeypatch) -> str:
    """A database of its own on the session's server, as the prediction log's URL."""
    from psycopg import sql

    name = f"log_{uuid.uuid4().hex[:12]}"
    with postgres.database.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = postgres.database.url(name)
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", url)
    return url


def test_rows_round_trip_with_utc_times_and_a_window(location, postgres):
    days = [dt.datetime(2026, 11, d, 12, tzinfo=UTC) for d in (28, 29, 30)]
    open_sink().write([record(i, days[i % 3]) for i in range(9)])
    window = read_predictions(dt.datetime(2026, 11, 29, tzinfo=UTC), dt.datetime(2026, 11, 30, tzinfo=UTC))
    assert sorted(window["request_id"]) == ["r1", "r4", "r7"]
    assert str(window["time"].dt.tz) == "UTC" and window["time"].iloc[0] == days[1]
    with postgres.database.connect(location.rsplit("/", 1)[1]) as conn:  # what another client sees
        assert conn.execute("SELECT count(*) FROM predictions").fetchone()[0] == 9


def test_logger_drains_into_postgres_and_feedback_joins_it(location):
    logger = PredictionLogger(batch_size=64, flush_interval_s=10.0)
    for i in range(500):
        logger.log(record(i))
    stats = logger.close()
    assert (stats.written, stats.failed_writes) == (500, 0)
    assert read_predictions()["request_id"].nunique() == 500
    assert record_feedback([{"request_id": "r1", "label": "rotten"}, {"request_id": "r2", "label": "fresh"}]) == 2
    assert sorted(feedback_rows(model_name="m")["text"]) == ["text 1", "text 2"]


def test_a_refused_login_is_reported_without_the_password(postgres):
    wrong = postgres.database.url("predictions").replace(postgres.password, "not-the-password-42")
    with pytest.raises(ValueError, match="cannot create table") as err:
        SqlSink(wrong)
    assert "not-the-password-42" not in str(err.value) and "password authentication failed" in str(err.value)
