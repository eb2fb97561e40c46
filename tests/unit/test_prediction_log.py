"""The prediction log and feedback store, on real Parquet files and a real SQLite database."""

from __future__ import annotations

import datetime as dt
import errno
import time

import pytest

from tasks.monitoring.feedback import FeedbackError, feedback_rows, read_feedback, record_feedback
from tasks.monitoring.prediction_log import (
    ParquetSink,
    PredictionLogger,
    SqlSink,
    open_sink,
    prediction_record,
    read_predictions,
    text_hash,
)

UTC = dt.UTC
ANSWER = {"label": "fresh", "score": 0.9, "scores": {"fresh": 0.9, "rotten": 0.1}}


def record(i: int, when: dt.datetime | None = None, answer: dict = ANSWER, keep_text: bool = True) -> dict:
    return prediction_record(
        answer, f"text {i}", "m", "3", latency_ms=1.5, request_id=f"r{i}", when=when, keep_text=keep_text
    )


class SlowSink:
    """A real sink behind a disk that takes `delay` seconds per write."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    def write(self, rows):
        time.sleep(self.delay)
        self.inner.write(rows)


@pytest.fixture(params=["parquet", "sqlite"])
def location(request, tmp_path, monkeypatch) -> str:
    where = str(tmp_path / "log") if request.param == "parquet" else f"sqlite:///{tmp_path / 'log.db'}"
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", where)
    return where


def test_record_hashes_text_unless_texts_are_logged(monkeypatch):
    monkeypatch.delenv("FTFLOW_LOG_TEXTS", raising=False)
    r = prediction_record(ANSWER, "secret", "m", 1, latency_ms=2.0)
    assert r["text"] is None and r["text_hash"] == text_hash("secret") and len(r["request_id"]) == 32
    monkeypatch.setenv("FTFLOW_LOG_TEXTS", "1")
    assert prediction_record(ANSWER, "secret", "m", 1, latency_ms=2.0)["text"] == "secret"
    value = prediction_record({"value": 1.25}, "x", "m", 1, latency_ms=2.0)
    assert value["prediction"] == "1.25" and value["probabilities"] is None


def test_sinks_round_trip_and_read_a_time_window(location):
    days = [dt.datetime(2026, 11, d, 12, tzinfo=UTC) for d in (28, 29, 30)]
    open_sink(location=location).write([record(i, days[i % 3]) for i in range(9)])
    everything = read_predictions()
    assert len(everything) == 9 and list(everything["time"]) == sorted(everything["time"])
    window = read_predictions(dt.datetime(2026, 11, 29, tzinfo=UTC), dt.datetime(2026, 11, 30, tzinfo=UTC))
    assert sorted(window["request_id"]) == ["r1", "r4", "r7"]
    assert str(window["time"].dt.tz) == "UTC" and window["confidence"].tolist() == [0.9] * 3
    if "://" not in location:  # one folder per day, files written under a temporary name then renamed
        folders = sorted(p.name for p in (open_sink().root).iterdir())
        assert folders == ["date=2026-11-28", "date=2026-11-29", "date=2026-11-30"]
        assert not list(open_sink().root.rglob(".*.tmp"))


def test_logger_drains_its_queue_on_close(location):
    logger = PredictionLogger(batch_size=64, flush_interval_s=10.0)  # only close() makes it write
    for i in range(1000):
        logger.log(record(i))
    stats = logger.close()
    assert (stats.logged, stats.written, stats.dropped, stats.queued) == (1000, 1000, 0, 0)
    assert read_predictions()["request_id"].nunique() == 1000


def test_full_queue_drops_the_oldest_counts_them_and_never_blocks(tmp_path):
    slow = SlowSink(ParquetSink(tmp_path / "p"), delay=0.5)
    logger = PredictionLogger(slow, max_queue=100, batch_size=100, flush_interval_s=0.01)
    started = time.perf_counter()
    for i in range(1000):
        logger.log(record(i))
    took = time.perf_counter() - started
    assert took < 0.4, f"log() waited for the sink ({took:.2f} s for 1000 rows)"
    stats = logger.close()
    assert stats.dropped > 0 and stats.written + stats.dropped == 1000
    kept = set(slow.inner.read()["request_id"])
    assert "r999" in kept  # the newest survive; what was dropped was older
    assert max(int(r[1:]) for r in {f"r{i}" for i in range(1000)} - kept) < 999


def test_flush_makes_rows_readable_without_closing(tmp_path):
    logger = PredictionLogger(ParquetSink(tmp_path / "p"), flush_interval_s=60.0)
    logger.log(record(1))
    assert logger.flush(10.0)
    assert list(ParquetSink(tmp_path / "p").read()["request_id"]) == ["r1"]
    logger.close()


def test_feedback_is_validated_stored_and_becomes_training_rows(location):
    open_sink().write(
        [
            record(1),
            record(2),
            record(3, keep_text=False),
            prediction_record({"value": 0.5}, "a score", "m", "3", 1.0, request_id="v1", keep_text=True),
        ]
    )
    with pytest.raises(FeedbackError) as e:
        record_feedback(
            [
                {"request_id": "r1", "label": "rotten"},
                {"request_id": "nope", "label": "fresh"},
                {"request_id": "r2", "label": "meh"},
                {"request_id": "v1", "label": "high"},
            ]
        )
    errors = {p["request_id"]: p["error"] for p in e.value.problems}
    assert set(errors) == {"nope", "r2", "v1"} and "unknown request id" in errors["nope"]
    assert "fresh, rotten" in errors["r2"] and "not a number" in errors["v1"]
    assert read_feedback().empty  # all or nothing
    assert record_feedback([{"request_id": "r1", "label": "rotten"}, {"request_id": "r2", "label": "fresh"}]) == 2
    record_feedback([{"request_id": "r2", "label": "rotten"}])  # a later correction wins
    rows = feedback_rows(model_name="m")
    assert rows.sort_values("text").to_dict("records") == [
        {"text": "text 1", "label": "rotten"},
        {"text": "text 2", "label": "rotten"},
    ]
    record_feedback([{"request_id": "r3", "label": "fresh"}])
    assert len(feedback_rows()) == 2  # a hashed-only text cannot be trained on


def test_feedback_finds_a_prediction_still_in_the_loggers_queue(tmp_path, monkeypatch):
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path))
    logger = PredictionLogger(flush_interval_s=60.0)
    logger.log(record(7))
    assert record_feedback([{"request_id": "r7", "label": "rotten"}], logger=logger) == 1
    logger.close()


def test_sql_sink_names_the_url_when_it_cannot_open(tmp_path):
    with pytest.raises(ValueError, match="FTFLOW_PREDICTION_LOG"):
        SqlSink(f"sqlite:///{tmp_path}/missing-folder/x.db")


def test_sql_sink_adds_the_columns_a_newer_schema_has_to_an_older_table(tmp_path):
    """A table an older version made (no client_request_id) takes new rows whole; its old rows stay."""
    import pyarrow as pa
    import sqlalchemy as sa

    from tasks.monitoring.prediction_log import PREDICTION_SCHEMA

    url = f"sqlite:///{tmp_path}/log.db"
    old_schema = pa.schema([f for f in PREDICTION_SCHEMA if f.name != "client_request_id"])
    assert len(old_schema) == len(PREDICTION_SCHEMA) - 1  # the column this test is about exists today
    SqlSink(url, schema=old_schema).write([record(0)])
    sink = SqlSink(url)
    sink.write([{**record(1), "client_request_id": "c-1"}])
    names = {c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("predictions")}
    assert "client_request_id" in names
    rows = sink.read().sort_values("request_id")
    assert len(rows) == 2 and rows["client_request_id"].isna().sum() == 1 and "c-1" in set(rows["client_request_id"])


class FullDisk:
    """pyarrow's file writes fail with ENOSPC while `full` is set, as on a filesystem with no room left."""

    def __init__(self, monkeypatch):
        import pyarrow.parquet as pq

        self.full = False
        real = pq.write_table

        def write_table(table, where, *args, **kwargs):
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device", str(where))
            return real(table, where, *args, **kwargs)

        monkeypatch.setattr(pq, "write_table", write_table)


def test_a_full_disk_loses_no_row_uncounted_and_the_held_rows_are_written_when_space_returns(tmp_path, monkeypatch):
    from tasks.monitoring.prediction_log import read_log_losses

    disk = FullDisk(monkeypatch)
    disk.full = True
    logger = PredictionLogger(ParquetSink(tmp_path / "predictions"), max_queue=50, batch_size=10, flush_interval_s=0.01)
    for i in range(30):
        logger.log(record(i))
    assert not logger.flush(5.0)  # answers at once that the write failed; nothing was dropped
    s = logger.stats()
    assert (s.status, s.written, s.dropped, s.queued) == ("failing", 0, 0, 30) and s.failed_writes >= 1
    assert "No space left on device" in s.last_error
    for i in range(30, 70):  # past the memory bound (50 queued, and a batch of 10 in a retry): the oldest go
        logger.log(record(i))
    time.sleep(1.0)  # a retry or two in between
    s = logger.stats()
    assert s.logged == 70 and s.written == 0 and s.logged == s.dropped + s.queued  # every row counted
    assert 20 <= s.dropped <= 20 + 10 and s.losses_unrecorded == s.dropped and s.status == "failing"
    assert not (tmp_path / "log_losses").exists()  # the loss record waits for the disk too

    disk.full = False
    assert logger.flush(10.0)
    lost = s.dropped
    s = logger.close()
    assert (s.status, s.logged, s.written, s.dropped, s.queued, s.losses_unrecorded) == (
        "lost_rows",
        70,
        70 - lost,
        lost,
        0,
        0,
    )
    kept = ParquetSink(tmp_path / "predictions").read()["request_id"]
    assert sorted(kept) == sorted(f"r{i}" for i in range(lost, 70)) and kept.is_unique  # the newest, each once
    assert read_log_losses(location=str(tmp_path)) == read_log_losses(model_name="m", location=str(tmp_path)) == lost


def test_a_disk_still_full_at_close_counts_what_it_could_not_write(tmp_path, monkeypatch):
    disk = FullDisk(monkeypatch)
    disk.full = True
    logger = PredictionLogger(ParquetSink(tmp_path / "predictions"), batch_size=10, flush_interval_s=0.01)
    for i in range(25):
        logger.log(record(i))
    s = logger.close(timeout_s=1.0)
    assert (s.logged, s.written, s.dropped, s.queued, s.losses_unrecorded) == (25, 0, 25, 0, 25)


def test_ready_says_degraded_and_feedback_is_refused_while_the_log_cannot_be_written(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from deploy.app import create_app

    disk = FullDisk(monkeypatch)
    app = create_app(bundle_dir=str(tmp_path))
    app.state.holder = SimpleNamespace(current=SimpleNamespace(version="3"), last_error=None)
    sink = ParquetSink(tmp_path / "predictions")
    sink.write([record(1)])
    app.state.logger = logger = PredictionLogger(sink, max_queue=5, flush_interval_s=0.01)
    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path))
    client = TestClient(app)
    assert client.get("/ready").json()["prediction_log"]["status"] == "ok"
    disk.full = True
    for i in range(2, 10):
        logger.log(record(i))
    refused = client.post("/feedback", json={"request_id": "r1", "label": "rotten"})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
    assert "cannot be written now" in refused.json()["detail"][0]["msg"]
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["prediction_log"] == {
        "status": "degraded",
        "reason": "failing",
        "rows_lost": 3,
        "rows_waiting": 5,
        "failed_writes": ready.json()["prediction_log"]["failed_writes"],
        "last_error": ready.json()["prediction_log"]["last_error"],
    }
    disk.full = False
    assert client.post("/feedback", json={"request_id": "r1", "label": "rotten"}).json() == {"stored": 1}
    assert client.get("/ready").json()["prediction_log"]["reason"] == "lost_rows"
    logger.close()


def test_rows_a_full_queue_drops_are_recorded_in_the_database_beside_the_log(tmp_path):
    from tasks.monitoring.prediction_log import LOSS_SCHEMA, LOSSES, read_log_losses, sink_beside

    url = f"sqlite:///{tmp_path / 'log.db'}"
    sql = SqlSink(url)
    logger = PredictionLogger(
        SlowSink(sql, delay=0.3), max_queue=10, batch_size=10, loss_sink=sink_beside(sql, LOSSES, LOSS_SCHEMA)
    )
    for i in range(100):
        logger.log(record(i))
    s = logger.close()
    assert s.dropped > 0 and s.written + s.dropped == 100 and s.losses_unrecorded == 0
    assert read_log_losses(location=url) == s.dropped and len(sql.read()) == s.written


def test_the_log_location_takes_references_to_other_variables(monkeypatch, tmp_path):
    from tasks.monitoring.prediction_log import log_location, open_sink

    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", f"sqlite:///{tmp_path}/${{FTFLOW_TEST_LOG_DB}}")
    with pytest.raises(ValueError, match="FTFLOW_TEST_LOG_DB"):  # an unset variable is named, not guessed
        log_location()
    monkeypatch.setenv("FTFLOW_TEST_LOG_DB", "log.db")
    assert log_location() == f"sqlite:///{tmp_path}/log.db"
    open_sink().write([])  # opens the database the reference names
    assert (tmp_path / "log.db").exists()
