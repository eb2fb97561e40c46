"""The prediction log: every answer the service gives, written off the request's hot path.

`PredictionLogger.log()` only appends to a bounded in-memory queue; a writer thread moves
batches to a sink. A full queue drops its oldest entries (counted in `stats()`), so a slow disk
or database never blocks a request; `close()` drains the queue, so a clean shutdown loses nothing.

Where the log lives (`open_sink`): FTFLOW_PREDICTION_LOG when set (a SQLAlchemy URL such as
sqlite:///log.db or postgresql://user@host/db, or a folder), else `<store>/predictions/` under the
project's MLflow store folder (tasks/platform/tracking.py's store_dir(), FTFLOW_MLRUNS), as Parquet files
partitioned by day: predictions/date=YYYY-MM-DD/part-<uuid>.parquet. Feedback uses the same kind
of sink beside it (table or folder `feedback`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import pandas as pd
import pyarrow as pa

LOG_ENV = "FTFLOW_PREDICTION_LOG"
LOG_TEXTS_ENV = "FTFLOW_LOG_TEXTS"
PREDICTIONS = "predictions"
ROLES = ("champion", "challenger", "canary")
# A request id is the server's: what new_request_id() makes, a batch's texts "<id>-<index>" (item_request_id).
# A client's X-Request-ID, when valid, is only logged beside it (client_request_id) to correlate: were it the
# key, 30 answers sent with one id and one correction would count as 30 corrections.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
CLIENT_REQUEST_ID_MAX = 64
REQUEST_ID_MAX = 80

PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("client_request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("role", pa.string()),
        ("text", pa.string()),
        ("text_hash", pa.string()),
        ("text_pair", pa.string()),
        ("prediction", pa.string()),
        ("confidence", pa.float64()),
        ("probabilities", pa.string()),
        ("entities", pa.string()),
        ("latency_ms", pa.float64()),
    ]
)


def log_texts_enabled() -> bool:
    """Whether raw texts are stored (FTFLOW_LOG_TEXTS=1); otherwise only their sha256."""
    return os.environ.get(LOG_TEXTS_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_request_id() -> str:
    return uuid.uuid4().hex


def is_request_id(value: str | None, max_length: int = CLIENT_REQUEST_ID_MAX) -> TypeGuard[str]:
    """Whether `value` may serve as a request id (letters, digits and ._:- ; at most `max_length`)."""
    if not value:
        return False
    return len(value) <= max_length and re.match(REQUEST_ID_PATTERN, value) is not None


def item_request_id(request_id: str, index: int, batch: bool) -> str:
    """The id of one text of a request: the request's own for a single text, "<id>-<index>" in a batch."""
    return f"{request_id}-{index}" if batch else request_id


def prediction_record(
    answer: dict,
    text: str,
    model_name: str,
    model_version: str,
    latency_ms: float,
    role: str = "champion",
    text_pair: str | None = None,
    request_id: str | None = None,
    when: dt.datetime | None = None,
    keep_text: bool | None = None,
    client_request_id: str | None = None,
) -> dict:
    """One log row from one answer of OnnxPredictor.predict ({label, score, scores} | {labels, scores} | {value} |
    {entities}); a label set is logged as its sorted JSON list."""
    if role not in ROLES:
        raise ValueError(f"role '{role}' is not one of {', '.join(ROLES)}")
    keep = log_texts_enabled() if keep_text is None else keep_text
    if "label" in answer:
        prediction, confidence = str(answer["label"]), answer.get("score")
    elif "labels" in answer:
        from tasks.kinds.multi_label import label_set_text

        prediction, confidence = label_set_text(answer["labels"]), None
    elif "value" in answer:
        prediction, confidence = repr(float(answer["value"])), None
    else:
        prediction, confidence = None, None
    entities = answer.get("entities")
    return {
        "request_id": request_id or new_request_id(),
        "client_request_id": client_request_id,
        "time": when or dt.datetime.now(dt.UTC),
        "model_name": model_name,
        "model_version": str(model_version),
        "role": role,
        "text": text if keep else None,
        "text_hash": text_hash(text),
        "text_pair": (text_pair if keep else None) if text_pair is not None else None,
        "prediction": prediction,
        "confidence": None if confidence is None else float(confidence),
        "probabilities": json.dumps(answer["scores"]) if "scores" in answer else None,
        "entities": json.dumps(entities) if entities is not None else None,
        "latency_ms": float(latency_ms),
    }


def _utc(t: dt.datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class ParquetSink:
    """Rows as Parquet files partitioned by day: <root>/date=YYYY-MM-DD/part-<uuid>.parquet."""

    def __init__(self, root: str | Path, schema: pa.Schema = PREDICTION_SCHEMA):
        self.root = Path(root)
        self.schema = schema

    def __repr__(self) -> str:
        return f"ParquetSink({self.root})"

    def write(self, rows: list[dict]) -> None:
        """Append rows; each day's rows go to a new file, written under a temporary name and renamed."""
        import pyarrow.parquet as pq

        if not rows:
            return
        by_day: dict[str, list[dict]] = {}
        for r in rows:
            when = _utc(r["time"]).to_pydatetime()
            by_day.setdefault(f"{when:%Y-%m-%d}", []).append({**{k: r.get(k) for k in self.schema.names}, "time": when})
        for day, part in sorted(by_day.items()):
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{uuid.uuid4().hex}.parquet"
            tmp = folder / f".{name}.tmp"  # readers skip dot-files: a half-written file is never read
            pq.write_table(pa.Table.from_pylist(part, schema=self.schema), tmp)
            tmp.replace(folder / name)

    def _files(self, lo: pd.Timestamp | None = None, hi: pd.Timestamp | None = None) -> list[Path]:
        files = []
        for folder in sorted(self.root.glob("date=*")):
            day = folder.name[5:]
            # Skip whole days outside the window: only their folder name is read.
            if (lo is not None and day < lo.strftime("%Y-%m-%d")) or (hi is not None and day > hi.strftime("%Y-%m-%d")):
                continue
            files += sorted(folder.glob("part-*.parquet"))
        return files

    def read(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> pd.DataFrame:
        """Rows with start <= time < end (all when None), oldest first."""
        lo = _utc(start) if start is not None else None
        hi = _utc(end) if end is not None else None
        return _window(self._scan(self._files(lo, hi)), lo, hi)

    def find(self, column: str, values: Iterable[str]) -> pd.DataFrame:
        """Rows whose `column` is one of `values` (the filter runs inside the Parquet scan)."""
        import pyarrow.compute as pc

        return self._scan(self._files(), pc.field(column).isin(pa.array(list(values), pa.string())))

    def _scan(self, files: list[Path], where=None) -> pd.DataFrame:
        import pyarrow.dataset as ds

        if not files:
            return self.schema.empty_table().to_pandas()
        return (
            ds.dataset([str(f) for f in files], schema=self.schema, format="parquet").to_table(filter=where).to_pandas()
        )


class SqlSink:
    """Rows in a SQL table through SQLAlchemy: SQLite, or PostgreSQL (postgresql+psycopg://; `ftflow up
    --postgres` or `--database` points the stack's flows at its `predictions` database). Both tested."""

    def __init__(self, url: str, table: str = PREDICTIONS, schema: pa.Schema = PREDICTION_SCHEMA):
        import sqlalchemy as sa

        self.url, self.schema = url, schema
        # pre_ping: a pooled connection a database restart closed is replaced, not handed to a write.
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        types = {pa.string(): sa.Text, pa.float64(): sa.Float}
        cols = []
        for f in schema:
            kind = sa.DateTime(timezone=True) if pa.types.is_timestamp(f.type) else types[f.type]()
            cols.append(sa.Column(f.name, kind, index=f.name in ("request_id", "time")))
        self.table = sa.Table(table, sa.MetaData(), *cols)
        try:
            self.table.metadata.create_all(self.engine)
            self._add_missing_columns()
        except sa.exc.SQLAlchemyError as e:
            from tasks.secrets import redact_text, redact_url

            # redact_url, not SQLAlchemy's hide_password: that leaves a `?password=` query value as written.
            raise ValueError(
                f"prediction log {redact_url(url)!r}: cannot create table "
                f"'{table}': {redact_text(str(e).splitlines()[0])}; check {LOG_ENV} and that the database is "
                f"reachable and writable"
            ) from None

    def _add_missing_columns(self) -> None:
        """Columns a newer schema added (e.g. client_request_id) are added to a table an older version made,
        nullable: its old rows keep their values, new rows are written whole."""
        import sqlalchemy as sa

        have = {c["name"] for c in sa.inspect(self.engine).get_columns(self.table.name)}
        missing = [c for c in self.table.columns if c.name not in have]
        if not missing:
            return
        prep = self.engine.dialect.identifier_preparer
        with self.engine.begin() as conn:
            for col in missing:
                kind = col.type.compile(dialect=self.engine.dialect)
                conn.execute(
                    sa.text(f"ALTER TABLE {prep.quote(self.table.name)} ADD COLUMN {prep.quote(col.name)} {kind}")
                )
        added = ", ".join(c.name for c in missing)
        logging.getLogger(__name__).info("prediction log table %s: added column(s) %s", self.table.name, added)

    def __repr__(self) -> str:
        from tasks.secrets import redact_url

        return f"SqlSink({redact_url(self.url)}, {self.table.name})"

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        clean = [
            {k: (_utc(v).to_pydatetime() if k == "time" else v) for k, v in r.items() if k in self.schema.names}
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(self.table.insert(), clean)

    def read(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> pd.DataFrame:
        import sqlalchemy as sa

        query = sa.select(self.table)
        if start is not None:
            query = query.where(self.table.c.time >= _utc(start).to_pydatetime())
        if end is not None:
            query = query.where(self.table.c.time < _utc(end).to_pydatetime())
        with self.engine.connect() as conn:
            df = pd.read_sql(query.order_by(self.table.c.time), conn)
        # SQLite hands back naive datetimes: they were written as UTC.
        df["time"] = pd.to_datetime(df["time"], utc=True).astype("datetime64[us, UTC]")
        return df

    def find(self, column: str, values: Iterable[str]) -> pd.DataFrame:
        """Rows whose `column` is one of `values`."""
        import sqlalchemy as sa

        query = sa.select(self.table).where(self.table.c[column].in_(list(values)))
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)


def _window(df: pd.DataFrame, lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    if lo is not None:
        keep &= df["time"] >= lo
    if hi is not None:
        keep &= df["time"] < hi
    return df[keep].sort_values("time", kind="stable").reset_index(drop=True)


def log_location() -> str:
    """FTFLOW_PREDICTION_LOG, else the folder beside the MLflow store (<store>/)."""
    from tasks.platform.tracking import store_dir

    return os.environ.get(LOG_ENV) or str(store_dir())


def is_database_url(location: str) -> bool:
    return "://" in location


def open_sink(table: str = PREDICTIONS, schema: pa.Schema = PREDICTION_SCHEMA, location: str | None = None):
    """The sink of `table` at `location` (default log_location()): SqlSink for a URL, else ParquetSink."""
    where = location or log_location()
    if is_database_url(where):
        return SqlSink(where, table, schema)
    return ParquetSink(Path(where) / table, schema)


def read_predictions(
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    model_name: str | None = None,
    location: str | None = None,
) -> pd.DataFrame:
    """Logged predictions with start <= time < end, optionally of one registered model, oldest first."""
    df = open_sink(location=location).read(start, end)
    if model_name is not None:
        df = df[df["model_name"] == model_name].reset_index(drop=True)
    return df


@dataclass(frozen=True)
class LoggerStats:
    logged: int
    written: int
    dropped: int
    failed_writes: int
    queued: int


class PredictionLogger:
    """A bounded queue and a writer thread in front of a sink; `log()` never blocks on I/O.

    max_queue: rows held in memory; when full, the oldest is dropped and counted.
    batch_size / flush_interval_s: the writer writes when a batch is full or this long has passed.
    """

    def __init__(self, sink=None, max_queue: int = 10_000, batch_size: int = 500, flush_interval_s: float = 1.0):
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.sink = sink if sink is not None else open_sink()
        self.batch_size, self.flush_interval_s = batch_size, flush_interval_s
        self._queue: deque[dict] = deque(maxlen=max_queue)
        self._lock = threading.Condition()
        self._closed = False
        self._in_flight = 0
        self._flushing = False
        self._logged = self._written = self._dropped = self._failed = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def log(self, record: dict) -> None:
        """Queue one row (see prediction_record); drops the oldest queued row when the queue is full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the prediction logger is closed; log before close()")
            if len(self._queue) == self._queue.maxlen:
                self._dropped += 1  # deque(maxlen) pops the oldest on append
            self._queue.append(record)
            self._logged += 1
            if len(self._queue) >= self.batch_size:
                self._lock.notify()

    def _take(self) -> list[dict]:
        with self._lock:
            # Small batches cost a file (or a transaction) each: wait for a full one, a flush or the interval.
            if len(self._queue) < self.batch_size and not (self._closed or self._flushing):
                self._lock.wait(self.flush_interval_s)
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight = n
            return batch

    def _run(self) -> None:
        import logging

        while True:
            batch = self._take()
            if batch:
                try:
                    self.sink.write(batch)
                    written, failed = len(batch), 0
                except Exception:  # a broken sink must not kill the writer; the rows are counted as lost
                    logging.getLogger(__name__).exception(
                        "prediction log: writing %d rows to %r failed", len(batch), self.sink
                    )
                    written, failed = 0, len(batch)
                with self._lock:
                    self._written += written
                    self._failed += failed
                    self._in_flight = 0
                    self._lock.notify_all()
            with self._lock:
                if self._closed and not self._queue:
                    return

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every row queued so far is written; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._flushing = True
            self._lock.notify_all()
            try:
                while self._queue or self._in_flight:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._lock.wait(min(left, 0.05))
            finally:
                self._flushing = False
        return True

    def close(self, timeout_s: float = 60.0) -> LoggerStats:
        """Stop accepting rows, write everything queued, stop the writer; returns the final counts."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        return self.stats()

    def stats(self) -> LoggerStats:
        with self._lock:
            return LoggerStats(self._logged, self._written, self._dropped, self._failed, len(self._queue))

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
