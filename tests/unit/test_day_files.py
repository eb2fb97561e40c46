"""The Parquet log stays a few files per day: many flushes, concurrent writers and readers, a merger that died."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter

import pytest

from tasks.monitoring.day_files import _merge, _names, compact_day, level_of
from tasks.monitoring.prediction_log import ParquetSink, new_request_id, prediction_record, request_id_time

UTC = dt.UTC
ANSWER = {"label": "fresh", "score": 0.9, "scores": {"fresh": 0.9, "rotten": 0.1}}
DAY = dt.datetime(2026, 11, 28, 12, tzinfo=UTC)


def rows(n: int, when: dt.datetime = DAY, tag: str = "") -> list[dict]:
    return [
        prediction_record(
            ANSWER, f"t{tag}{i}", "m", "1", 1.0, request_id=new_request_id(when), when=when, keep_text=True
        )
        for i in range(n)
    ]


def test_request_ids_carry_their_time_and_others_none():
    made = dt.datetime(2026, 11, 28, 23, 59, 59, 123000, tzinfo=UTC)
    rid = new_request_id(made)
    assert len(rid) == 32 and uuid.UUID(rid).version == 7 and uuid.UUID(rid).variant == uuid.RFC_4122
    assert request_id_time(rid) == request_id_time(f"{rid}-12") == made
    assert request_id_time(uuid.uuid4().hex) is None and request_id_time("client-id") is None


def test_many_flushes_leave_few_files_and_every_row_once(tmp_path):
    sink = ParquetSink(tmp_path / "p", fan_in=4)
    days = [DAY, DAY + dt.timedelta(days=1)]
    written = []
    for i in range(300):  # 300 flushes of 2 rows, alternating two days
        batch = rows(2, days[i % 2], tag=f"{i}-")
        sink.write(batch)
        written += [r["request_id"] for r in batch]
    for folder in sink._folders():
        names = _names(folder)
        per_level = Counter(level_of(n) for n in names)
        assert len(names) <= 12 and all(count < 4 for count in per_level.values()), per_level  # 150 flushes a day
    everything = sink.read()
    assert Counter(everything["request_id"]) == Counter(written)  # every row, each once
    found = sink.find("request_id", written[::37])
    assert sorted(found["request_id"]) == sorted(written[::37])


def test_a_lookup_by_request_id_opens_only_that_days_files(tmp_path):
    sink = ParquetSink(tmp_path / "p", fan_in=4)
    wanted = rows(3)
    sink.write(wanted)
    for d in range(1, 30):
        sink.write(rows(2, DAY - dt.timedelta(days=d)))
    # Every other day's files made unreadable: a lookup that opened them would fail.
    for folder in sink._folders():
        if folder.name != f"date={DAY:%Y-%m-%d}":
            for f in folder.glob("*.parquet"):
                f.write_bytes(b"not parquet")
    assert list(sink.find("request_id", [wanted[1]["request_id"]])["text"]) == ["t1"]
    with pytest.raises(Exception):  # noqa: B017  an id without a day needs every day: it meets a broken file
        sink.find("request_id", [uuid.uuid4().hex])


def test_reads_during_concurrent_writes_and_merges_see_each_row_at_most_once(tmp_path):
    root = tmp_path / "p"
    done: list[str] = []
    lock = threading.Lock()
    problems: list[str] = []

    def write(tag: str) -> None:
        sink = ParquetSink(root, fan_in=3)  # one sink per writer, as separate processes would have
        for i in range(120):
            batch = rows(2, tag=f"{tag}{i}-")
            sink.write(batch)
            with lock:
                done.extend(r["request_id"] for r in batch)

    def read() -> None:
        sink = ParquetSink(root, fan_in=3)
        while any(w.is_alive() for w in writers):
            with lock:
                before = set(done)
            try:
                seen = Counter(sink.read()["request_id"])
            except Exception as e:  # a failed read is a finding, not a dead thread
                problems.append(f"read failed: {e!r}")
                return
            if any(c > 1 for c in seen.values()):
                problems.append(f"duplicated: {[r for r, c in seen.items() if c > 1][:3]}")
            if before - set(seen):
                problems.append(f"missing {len(before - set(seen))} rows written before the read")

    writers = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in writers + readers:
        t.start()
    for t in writers + readers:
        t.join()
    assert not problems, problems[:5]
    final = Counter(ParquetSink(root).read()["request_id"])
    assert final == Counter(done) and len(final) == 480
    assert len(_names(root / f"date={DAY:%Y-%m-%d}")) < 12


def test_a_merger_that_died_before_deleting_its_sources_leaves_no_duplicate(tmp_path):
    sink = ParquetSink(tmp_path / "p", fan_in=None)  # no merging on write: the test merges by hand
    for i in range(5):
        sink.write(rows(2, tag=f"{i}-"))
    folder = sink._folders()[0]
    sources = _names(folder)
    _merge(folder, sources, 1, sink.schema)  # renamed into place; the sources were never deleted
    assert len(_names(folder)) == 6 and len(sink.read()) == 10  # each row once: the merged file replaces them
    assert compact_day(folder, sink.schema, fan_in=16) == 0  # nothing to merge, but the leftovers go
    assert len(_names(folder)) == 1 and len(sink.read()) == 10


def test_an_old_log_of_many_small_files_is_merged_by_compact(tmp_path):
    old = ParquetSink(tmp_path / "p", fan_in=None)
    for i in range(40):
        old.write(rows(1, tag=f"{i}-"))
    sink = ParquetSink(tmp_path / "p", fan_in=8)
    assert sink.compact() == 40
    assert len(_names(sink._folders()[0])) == 1 and sink.read()["request_id"].nunique() == 40
