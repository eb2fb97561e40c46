"""/feedback's lookup by request id, as the log grows: before (every file scanned) and now (merged days, the id's day).

    .venv/bin/python bench/feedback_lookup.py                     # 10 / 1,000 / 10,000 flushes
    .venv/bin/python bench/feedback_lookup.py --flushes 10 1000   # a short proof

Each size is a Parquet prediction log written as the service writes it: one flush (a part file of
--rows rows) at a time, 100 flushes a day. "before" is the log as main left it (no merging) searched
as main did, every file scanned with the id filter; "now" is the same flushes through today's
ParquetSink (days merged as parts pile up) and its find(), which opens only the id's day (and the
next). "now, id without a day" looks up a uuid4 id (a log written before ids carried their time):
every day is read, but each day is a few merged files. Times are the median of --lookups lookups of
ids drawn from the log; the ratio column is each time over the smallest size's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import cpu_line  # noqa: E402

ANSWER = {"label": "fresh", "score": 0.9, "scores": {"fresh": 0.9, "rotten": 0.1}}
FLUSHES_PER_DAY = 100


def write_log(root: Path, flushes: int, rows: int, fan_in: int | None, legacy_ids: bool = False) -> list[str]:
    """`flushes` writes of `rows` rows, 100 a day ending today; returns the request ids."""
    from tasks.monitoring.prediction_log import ParquetSink, new_request_id, prediction_record

    sink = ParquetSink(root, fan_in=fan_in)
    days = max(1, flushes // FLUSHES_PER_DAY)
    first = dt.datetime.now(dt.UTC).replace(hour=12) - dt.timedelta(days=days - 1)
    ids = []
    for i in range(flushes):
        when = first + dt.timedelta(days=i * days // flushes, seconds=i)
        batch = [
            prediction_record(
                ANSWER,
                f"text {i}-{j}",
                "m",
                "1",
                1.0,
                request_id=uuid.uuid4().hex if legacy_ids else new_request_id(when),
                when=when,
                keep_text=True,
            )
            for j in range(rows)
        ]
        sink.write(batch)
        ids += [r["request_id"] for r in batch]
    return ids


def scan_every_file(root: Path, request_id: str):
    """main's lookup: every part file of every day, filtered by id inside the scan."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from tasks.monitoring.prediction_log import PREDICTION_SCHEMA

    files = [str(f) for f in sorted(root.glob("date=*/part-*.parquet"))]
    where = pc.field("request_id").isin(pa.array([request_id], pa.string()))
    return ds.dataset(files, schema=PREDICTION_SCHEMA, format="parquet").to_table(filter=where).to_pandas()


def median_s(lookup, ids: list[str], n: int) -> float:
    rng = random.Random(0)
    times = []
    for rid in rng.sample(ids, min(n, len(ids))):
        t = time.perf_counter()
        found = lookup(rid)
        times.append(time.perf_counter() - t)
        assert len(found) == 1, f"{rid}: {len(found)} rows"
    return statistics.median(times)


def measure(flushes: int, rows: int, lookups: int) -> dict:
    """One log size written three ways (before, now, now with day-less ids) and each looked up."""
    from tasks.monitoring.day_files import FAN_IN
    from tasks.monitoring.prediction_log import ParquetSink

    with tempfile.TemporaryDirectory(prefix="ftflow-bench-lookup-") as tmp:
        before, now, legacy = Path(tmp, "before"), Path(tmp, "now"), Path(tmp, "legacy")
        before_ids = write_log(before, flushes, rows, fan_in=None)
        now_ids = write_log(now, flushes, rows, fan_in=FAN_IN)
        legacy_ids = write_log(legacy, flushes, rows, fan_in=FAN_IN, legacy_ids=True)
        sink, legacy_sink = ParquetSink(now), ParquetSink(legacy)
        return {
            "flushes": flushes,
            "days": len(list(now.glob("date=*"))),
            "files_before": len(list(before.glob("date=*/*.parquet"))),
            "files_now": len(list(now.glob("date=*/*.parquet"))),
            "before": median_s(lambda r: scan_every_file(before, r), before_ids, lookups),
            "now": median_s(lambda r: sink.find("request_id", [r]), now_ids, lookups),
            "legacy": median_s(lambda r: legacy_sink.find("request_id", [r]), legacy_ids, lookups),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flushes", type=int, nargs="+", default=[10, 1000, 10000], help="log sizes, in flushes")
    parser.add_argument("--rows", type=int, default=3, help="rows per flush")
    parser.add_argument("--lookups", type=int, default=15, help="lookups timed per size (the median is shown)")
    args = parser.parse_args()

    from tasks.monitoring.day_files import FAN_IN

    print(cpu_line())
    print(f"{args.rows} rows a flush, {FLUSHES_PER_DAY} flushes a day, merge fan-in {FAN_IN}\n")
    results = [measure(flushes, args.rows, args.lookups) for flushes in args.flushes]
    base = results[0]
    print(
        f"{'flushes':>8} {'days':>5} {'files before':>13} {'files now':>10} | {'before s':>9} {'ratio':>6} | "
        f"{'now s':>8} {'ratio':>6} | {'id without a day s':>19} {'ratio':>6}"
    )
    for r in results:
        print(
            f"{r['flushes']:>8,} {r['days']:>5} {r['files_before']:>13,} {r['files_now']:>10,} | "
            f"{r['before']:>9.4f} {r['before'] / base['before']:>6.1f} | {r['now']:>8.4f} {r['now'] / base['now']:>6.2f} | "
            f"{r['legacy']:>19.4f} {r['legacy'] / base['legacy']:>6.1f}"
        )


if __name__ == "__main__":
    main()
