"""The prediction log: every answer the service gives, written off the request's hot path.

`PredictionLogger.log()` only appends to a bounded in-memory queue; a writer thread moves
batches to a sink. A failed write (a full disk) keeps its rows and retries them; only a full queue drops
rows, the oldest, each counted in `stats()` and recorded in `log_losses` beside the log, so a slow or full
disk never blocks a request and never loses a row silently; `close()` drains the queue.

Where the log lives (`open_sink`): FTFLOW_PREDICTION_LOG when set (a SQLAlchemy URL such as
sqlite:///log.db or postgresql://user@host/db, or a folder), else `<store>/predictions/` under the
project's MLflow store folder (tasks/platform/tracking.py's store_dir(), FTFLOW_MLRUNS), as Parquet files
partitioned by day: predictions/date=YYYY-MM-DD/part-<uuid>.parquet, merged as they pile up
(tasks/monitoring/day_files.py). Feedback and loss records use the same kind of sink beside it (table or
folder `feedback`, `log_losses`).
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
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import pandas as pd
import pyarrow as pa

from tasks.kinds.multi_label import label_set_text
from tasks.monitoring.day_files import FAN_IN, compact_day, level0_count, read_days, write_part
from tasks.platform.tracking import store_dir
from tasks.secrets import expand_references, redact_text, redact_url

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
# How much later than its id's time a row can be stamped (a shadow answer waits in its queue); a lookup by id
# reads the next day too only for ids made this close to midnight.
ROW_LAG = dt.timedelta(hours=1)

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
        # The token's holder when the service takes per-client tokens: /feedback is refused to anyone else.
        ("client", pa.string()),
    ]
)


def log_texts_enabled() -> bool:
    """Whether raw texts are stored (FTFLOW_LOG_TEXTS=1); otherwise only their sha256."""
    return os.environ.get(LOG_TEXTS_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_HEX = frozenset("0123456789abcdef")


def new_request_id(when: dt.datetime | None = None) -> str:
    """A UUIDv7 as 32 hex digits: its first 48 bits are the request's time (ms), the rest random. The time lets a
    lookup by id open only that day's files of the log (request_id_day), however many days it holds."""
    ms = int((when or dt.datetime.now(dt.UTC)).timestamp() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62 | rand & (2**62 - 1)
    return f"{value:032x}"


def request_id_time(request_id: str) -> dt.datetime | None:
    """When new_request_id made `request_id` (or a batch text's "<id>-<index>"), to the millisecond; None for
    another id (a log written before ids carried their time holds uuid4 ids, or a client's)."""
    base = request_id.split("-", 1)[0]
    if len(base) != 32 or base[12] != "7" or base[16] not in "89ab" or not all(c in _HEX for c in base):
        return None
    try:
        return dt.datetime.fromtimestamp(int(base[:12], 16) / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):
        return None


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
    client: str | None = None,
) -> dict:
    """One log row from one answer of OnnxPredictor.predict ({label, score, scores} | {labels, scores} | {value} |
    {entities}); a label set is logged as its sorted JSON list."""
    if role not in ROLES:
        raise ValueError(f"role '{role}' is not one of {', '.join(ROLES)}")
    keep = log_texts_enabled() if keep_text is None else keep_text
    if "label" in answer:
        prediction, confidence = str(answer["label"]), answer.get("score")
    elif "labels" in answer:
        prediction, confidence = label_set_text(answer["labels"]), None
    elif "value" in answer:
        prediction, confidence = repr(float(answer["value"])), None
    else:
        prediction, confidence = None, None
    entities = answer.get("entities")
    return {
        "request_id": request_id or new_request_id(when),  # the id carries the day its row is filed under
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
        "client": client,
    }


def _utc(t: dt.datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class ParquetSink:
    """Rows as Parquet files partitioned by day: <root>/date=YYYY-MM-DD/, each day's flushes merged as they pile up
    (tasks/monitoring/day_files.py), so a day holds a few files however often the log is flushed.

    fan_in: a day's files of one level are merged into one when this many exist (None: never merged).
    """

    def __init__(self, root: str | Path, schema: pa.Schema = PREDICTION_SCHEMA, fan_in: int | None = FAN_IN):
        self.root = Path(root)
        self.schema = schema
        self.fan_in = fan_in

    def __repr__(self) -> str:
        return f"ParquetSink({self.root})"

    def write(self, rows: list[dict]) -> None:
        """Append rows: each day's rows as a new part file (written under a temporary name and renamed), then
        that day merged when its parts reach fan_in."""
        if not rows:
            return
        by_day: dict[str, list[dict]] = {}
        for r in rows:
            when = _utc(r["time"]).to_pydatetime()
            by_day.setdefault(f"{when:%Y-%m-%d}", []).append({**{k: r.get(k) for k in self.schema.names}, "time": when})
        for day, part in sorted(by_day.items()):
            write_part(self.root / f"date={day}", pa.Table.from_pylist(part, schema=self.schema))
        for day in sorted(by_day):
            folder = self.root / f"date={day}"
            if self.fan_in is not None and level0_count(folder) >= self.fan_in:
                try:
                    compact_day(folder, self.schema, self.fan_in)
                except OSError as e:  # the rows are written; merging waits for the next write
                    logging.getLogger(__name__).warning("prediction log: merging %s failed: %s", folder, e)

    def compact(self) -> int:
        """Merge every day's files that have piled up (a log written before merging existed); returns how many."""
        if self.fan_in is None:
            return 0
        return sum(compact_day(folder, self.schema, self.fan_in) for folder in self._folders())

    def _folders(self, lo: pd.Timestamp | None = None, hi: pd.Timestamp | None = None) -> list[Path]:
        folders = []
        for folder in sorted(self.root.glob("date=*")):
            day = folder.name[5:]
            # Skip whole days outside the window: only their folder name is read.
            if (lo is not None and day < lo.strftime("%Y-%m-%d")) or (hi is not None and day > hi.strftime("%Y-%m-%d")):
                continue
            folders.append(folder)
        return folders

    def _request_folders(self, ids: list[str]) -> list[Path]:
        """The day folders that can hold `ids`: the day each id was made, and the next for an id made in the
        day's last hour (a row's time is when it was answered or shadowed, a moment later); every folder when an
        id carries no time."""
        times = [request_id_time(i) for i in ids]
        if any(t is None for t in times):
            return self._folders()
        days = {(t + lag).date() for t in times if t is not None for lag in (dt.timedelta(0), ROW_LAG)}
        return [f for f in (self.root / f"date={d:%Y-%m-%d}" for d in sorted(days)) if f.is_dir()]

    def read(self, start: dt.datetime | None = None, end: dt.datetime | None = None) -> pd.DataFrame:
        """Rows with start <= time < end (all when None), oldest first."""
        lo = _utc(start) if start is not None else None
        hi = _utc(end) if end is not None else None
        return _window(read_days(self._folders(lo, hi), self.schema).to_pandas(), lo, hi)

    def find(self, column: str, values: Iterable[str]) -> pd.DataFrame:
        """Rows whose `column` is one of `values` (the filter runs inside the Parquet scan). By request id only
        the days the ids were made on are read: a lookup's cost does not grow with the log."""
        # heavy (pyarrow.compute): loaded when this runs, so importing tasks.monitoring.prediction_log stays light
        import pyarrow.compute as pc

        wanted = list(values)
        folders = self._request_folders(wanted) if column == "request_id" else self._folders()
        where = pc.field(column).isin(pa.array(wanted, pa.string()))
        return read_days(folders, self.schema, where).to_pandas()


class SqlSink:
    """Rows in a SQL table through SQLAlchemy: SQLite, or PostgreSQL (postgresql+psycopg://; `ftflow up
    --postgres` or `--database` points the stack's flows at its `predictions` database). Both tested."""

    def __init__(self, url: str, table: str = PREDICTIONS, schema: pa.Schema = PREDICTION_SCHEMA):
        # heavy (sqlalchemy): loaded when this runs, so importing tasks.monitoring.prediction_log stays light
        import sqlalchemy as sa

        self.url, self.schema = url, schema
        # pre_ping: a pooled connection a database restart closed is replaced, not handed to a write.
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        types = {pa.string(): sa.Text, pa.float64(): sa.Float, pa.int64(): sa.BigInteger}
        cols = []
        for f in schema:
            kind = sa.DateTime(timezone=True) if pa.types.is_timestamp(f.type) else types[f.type]()
            cols.append(sa.Column(f.name, kind, index=f.name in ("request_id", "time")))
        self.table = sa.Table(table, sa.MetaData(), *cols)
        try:
            self.table.metadata.create_all(self.engine)
            self._add_missing_columns()
        except sa.exc.SQLAlchemyError as e:
            # redact_url, not SQLAlchemy's hide_password: that leaves a `?password=` query value as written.
            raise ValueError(
                f"prediction log {redact_url(url)!r}: cannot create table "
                f"'{table}': {redact_text(str(e).splitlines()[0])}; check {LOG_ENV} and that the database is "
                f"reachable and writable"
            ) from None

    def _add_missing_columns(self) -> None:
        """Columns a newer schema added (e.g. client_request_id) are added to a table an older version made,
        nullable: its old rows keep their values, new rows are written whole."""
        # heavy (sqlalchemy): loaded when this runs, so importing tasks.monitoring.prediction_log stays light
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
        # heavy (sqlalchemy): loaded when this runs, so importing tasks.monitoring.prediction_log stays light
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
        # heavy (sqlalchemy): loaded when this runs, so importing tasks.monitoring.prediction_log stays light
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
    """FTFLOW_PREDICTION_LOG (its `${NAME}` references expanded), else the folder beside the MLflow store."""
    configured = os.environ.get(LOG_ENV)
    # A database password stays in its own variable: FTFLOW_PREDICTION_LOG='postgresql://log:${LOG_PW}@db/log'.
    return expand_references(configured, LOG_ENV)[0] if configured else str(store_dir())


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


LOSSES = "log_losses"
LOSS_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),  # the newest lost row's time (the monitor's window counts it)
        ("first_time", pa.timestamp("us", tz="UTC")),  # the oldest lost row's time
        ("model_name", pa.string()),
        ("rows", pa.int64()),
        ("reason", pa.string()),
    ]
)
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0  # a failing sink is retried after 0.5 s, 1 s, 2 s ... then every 30 s


def sink_beside(sink, table: str, schema: pa.Schema):
    """A sink for `table` where `sink` writes (the folder beside it, or the same database); None for another kind."""
    if isinstance(sink, ParquetSink):
        return ParquetSink(sink.root.parent / table, schema)
    if isinstance(sink, SqlSink):
        return SqlSink(sink.engine.url.render_as_string(hide_password=False), table, schema)
    return None


def read_log_losses(
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    model_name: str | None = None,
    location: str | None = None,
) -> int:
    """How many prediction rows the service recorded as lost (a full disk, a failing database, a full queue)
    among those stamped start <= time < end, optionally of one model."""
    losses = open_sink(LOSSES, LOSS_SCHEMA, location).read(start, end)
    if model_name is not None:
        losses = losses[losses["model_name"] == model_name]
    return int(losses["rows"].sum())


@dataclass(frozen=True)
class LoggerStats:
    """logged = written + dropped + queued at every moment: no row leaves the logger uncounted."""

    logged: int
    written: int
    dropped: int  # rows lost: the oldest, when the queue (and the rows held for a retry) outgrew max_queue
    failed_writes: int  # write attempts that failed; their rows stayed queued and were retried
    queued: int  # rows in memory, waiting or held for a retry
    status: str = "ok"  # ok | failing (writes fail, rows held and retried) | lost_rows (some dropped since start)
    last_error: str | None = None  # the last failed write's error, credentials masked
    losses_unrecorded: int = 0  # dropped rows not yet written to the log_losses record (the disk is still full)


class PredictionLogger:
    """A bounded queue and a writer thread in front of a sink; `log()` never blocks on I/O.

    max_queue: rows queued in memory, waiting or held for a retry (plus one batch being written); past it the
    oldest are dropped and counted.
    batch_size / flush_interval_s: the writer writes when a batch is full or this long has passed.

    A write that fails (a full disk, a database down) loses nothing: its rows go back to the queue's head
    and are retried after RETRY_FIRST_S, doubling to RETRY_MAX_S, while new rows queue behind them. Only
    when the queue is full are rows dropped, the oldest first; each one is counted in stats() (which /ready
    shows) and, per model, written as a loss record (`log_losses`, beside the log) as soon as the sink takes
    writes again, where the monitor reads it.
    """

    def __init__(
        self,
        sink=None,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        loss_sink=None,
    ):
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.sink = sink if sink is not None else open_sink()
        self.loss_sink = loss_sink if loss_sink is not None else sink_beside(self.sink, LOSSES, LOSS_SCHEMA)
        self.max_queue, self.batch_size, self.flush_interval_s = max_queue, batch_size, flush_interval_s
        self._queue: deque[dict] = deque()
        self._lock = threading.Condition()
        self._closed = False
        self._close_by: float | None = None
        self._in_flight = 0
        self._flushing = self._retry_now = False
        self._attempts = 0
        self._retry_at: float | None = None  # set while the sink fails: when the next attempt is due
        self._backoff = RETRY_FIRST_S
        self._last_error: str | None = None
        self._unrecorded: dict[str, dict] = {}  # model_name -> rows lost, their first and last time, why
        self._logged = self._written = self._dropped = self._failed = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def log(self, record: dict) -> None:
        """Queue one row (see prediction_record); drops the oldest queued row when the queue is full."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the prediction logger is closed; log before close()")
            self._queue.append(record)
            self._logged += 1
            self._trim()
            if len(self._queue) >= self.batch_size and self._retry_at is None:
                self._lock.notify()

    def _trim(self) -> None:
        # Under the lock. Memory holds at most max_queue rows queued plus one batch being written.
        while len(self._queue) > self.max_queue:
            self._lose(self._queue.popleft())

    def _lose(self, row: dict) -> None:
        self._dropped += 1
        when = _utc(row.get("time") or dt.datetime.now(dt.UTC))
        model = str(row.get("model_name") or "")
        tally = self._unrecorded.setdefault(model, {"rows": 0, "first_time": when, "time": when})
        tally["rows"] += 1
        tally["first_time"], tally["time"] = min(tally["first_time"], when), max(tally["time"], when)
        tally["reason"] = (
            f"the sink failed ({self._last_error}) and the queue of {self.max_queue} rows was full"
            if self._retry_at is not None
            else f"the queue of {self.max_queue} rows was full (the sink is slower than the traffic)"
        )

    def _take(self) -> list[dict]:
        with self._lock:
            if self._retry_at is not None:
                # A failing sink is retried on its backoff; a flush asks for one attempt now (the disk may
                # have room again); on close, every half second until the close deadline.
                while not self._retry_now and time.monotonic() < self._retry_at:
                    if self._closed:
                        self._retry_at = min(self._retry_at, time.monotonic() + RETRY_FIRST_S)
                    self._lock.wait(max(0.0, self._retry_at - time.monotonic()))
                self._retry_now = False
            elif len(self._queue) < self.batch_size and not (self._closed or self._flushing):
                # Small batches cost a file (or a transaction) each: wait for a full one, a flush or the interval.
                self._lock.wait(self.flush_interval_s)
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight = n
            return batch

    def _run(self) -> None:
        log = logging.getLogger(__name__)
        compact = getattr(self.sink, "compact", None)
        if compact is not None:  # a log written before days were merged: merged once, off the request path
            try:
                compact()
            except Exception as e:
                log.warning("prediction log: merging %r's small files failed: %s", self.sink, e)
        while True:
            batch = self._take()
            if batch:
                try:
                    self.sink.write(batch)
                    error = None
                except Exception as e:  # a broken sink must not kill the writer; the rows are kept and retried
                    error = e
                with self._lock:
                    self._attempts += 1
                    self._in_flight = 0
                    if error is None:
                        self._written += len(batch)
                        self._retry_at, self._backoff = None, RETRY_FIRST_S
                    else:
                        self._failed += 1
                        self._last_error = _describe(error)
                        if self._retry_at is None:  # once per failing spell, not once per retry
                            log.error(
                                "prediction log: writing %d rows to %r failed (%s); keeping up to %d rows in memory "
                                "and retrying",
                                len(batch),
                                self.sink,
                                self._last_error,
                                self.max_queue,
                            )
                        self._retry_at = time.monotonic() + self._backoff
                        self._backoff = min(self._backoff * 2, RETRY_MAX_S)
                        self._queue.extendleft(reversed(batch))
                        self._trim()
                    self._lock.notify_all()
            if self._retry_at is None:
                self._record_losses()
            with self._lock:
                if self._closed and (
                    not self._queue or (self._close_by is not None and time.monotonic() >= self._close_by)
                ):
                    self._give_up()
                    return

    def _record_losses(self) -> None:
        """Write the lost-row tallies to the loss record; kept for the next attempt when that fails too."""
        with self._lock:
            pending, self._unrecorded = self._unrecorded, {}
        if not pending:
            return
        rows = [{"model_name": model, **tally} for model, tally in pending.items()]
        try:
            if self.loss_sink is None:
                raise RuntimeError(f"{self.sink!r} has no place for a loss record")
            self.loss_sink.write(rows)
        except Exception:
            with self._lock:
                for model, tally in pending.items():  # merge back with whatever was lost meanwhile
                    now = self._unrecorded.setdefault(model, dict(tally, rows=0))
                    now["rows"] += tally["rows"]
                    now["first_time"] = min(now["first_time"], tally["first_time"])

    def _give_up(self) -> None:
        """Closing past its deadline with a failing sink: what is still queued is lost, counted and logged."""
        for row in list(self._queue):
            self._lose(row)
        self._queue.clear()
        self._lock.notify_all()
        if self._unrecorded:
            lost = sum(t["rows"] for t in self._unrecorded.values())
            self._lock.release()
            try:
                self._record_losses()
            finally:
                self._lock.acquire()
            if self._unrecorded:
                why = f"the sink still fails: {self._last_error}" if self._retry_at is not None else "no loss record"
                logging.getLogger(__name__).error(
                    "prediction log: %d rows lost and not recorded in %s (%s)", lost, LOSSES, why
                )

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every row queued so far is written; False on timeout, or at once when a write attempt
        made for this flush fails (the rows stay queued and are retried)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._flushing = self._retry_now = True
            started = self._attempts
            self._lock.notify_all()
            try:
                while self._queue or self._in_flight:
                    left = deadline - time.monotonic()
                    if left <= 0 or (self._retry_at is not None and self._attempts > started):
                        return False
                    self._lock.wait(min(left, 0.05))
            finally:
                self._flushing = self._retry_now = False
        return True

    def close(self, timeout_s: float = 60.0) -> LoggerStats:
        """Stop accepting rows, write everything queued, stop the writer; returns the final counts. A sink that
        still fails after `timeout_s` loses the rows left, counted in `dropped`."""
        with self._lock:
            self._closed = True
            self._close_by = time.monotonic() + timeout_s
            self._lock.notify_all()
        self._thread.join(timeout_s + 5.0)
        return self.stats()

    def stats(self) -> LoggerStats:
        with self._lock:
            status = "failing" if self._retry_at is not None else "lost_rows" if self._dropped else "ok"
            return LoggerStats(
                self._logged,
                self._written,
                self._dropped,
                self._failed,
                len(self._queue) + self._in_flight,
                status,
                self._last_error,
                sum(t["rows"] for t in self._unrecorded.values()),
            )

    def __enter__(self) -> PredictionLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _describe(error: Exception) -> str:
    return redact_text(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")[:300]
