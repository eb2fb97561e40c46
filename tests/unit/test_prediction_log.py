"""The prediction log and feedback store, on real Parquet files and a real SQLite database."""

from __future__ import annotations

import datetime as dt
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
