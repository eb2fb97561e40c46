"""The prediction log on a filesystem that really fills up: a 512 KB tmpfs, mounted in a user namespace.

No row may be lost without being counted, counted rows are recorded once the disk has room again, and every
row held through the full spell is written exactly once. Skipped where unprivileged user namespaces are off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import datetime as dt, errno, json, os, sys, time
    from pathlib import Path
    from tasks.monitoring.prediction_log import ParquetSink, PredictionLogger, prediction_record, read_log_losses

    disk = Path(sys.argv[1])
    answer = {"label": "fresh", "score": 0.9, "scores": {"fresh": 0.9, "rotten": 0.1}}

    def row(i):
        return prediction_record(answer, f"text {i} " * 20, "m", "1", 1.0, request_id=f"r{i}", keep_text=True)

    logger = PredictionLogger(ParquetSink(disk / "predictions"), max_queue=1000, batch_size=100, flush_interval_s=0.01)
    logger.log(row(0))
    assert logger.flush(10)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    for i in range(1, 3001):
        logger.log(row(i))
    time.sleep(1.5)
    full = logger.stats()
    flushed_while_full = logger.flush(5)
    leftovers = sorted(p.name for p in disk.rglob(".*.tmp"))
    filler.unlink()  # room again
    flushed = logger.flush(30)
    final = logger.close()
    kept = ParquetSink(disk / "predictions").read()["request_id"]
    print(json.dumps({
        "full": vars(full), "flushed_while_full": flushed_while_full, "tmp_left_while_full": leftovers,
        "flushed": flushed, "final": vars(final), "kept": sorted(kept, key=lambda r: int(r[1:])),
        "unique": bool(kept.is_unique), "losses": read_log_losses(location=str(disk)),
    }))
    """
)


def namespaces_work(tmp: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp}"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


def test_a_really_full_disk_loses_no_row_uncounted(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not namespaces_work(disk):
        pytest.skip("unprivileged user namespaces (unshare -rm) are not available to mount a small tmpfs")
    run = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=512k tmpfs "$1" && exec "$2" -c "$3" "$1"',
            "sh",
            str(disk),
            sys.executable,
            SCRIPT,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    full, final = out["full"], out["final"]
    # While full: nothing written, memory bounded (1,000 queued plus a batch being retried), every row counted.
    assert full["status"] == "failing" and "No space left on device" in full["last_error"]
    assert full["written"] == 1 and full["logged"] == 3001 == full["written"] + full["dropped"] + full["queued"]
    assert 2000 - 100 <= full["dropped"] <= 2000 and full["queued"] <= 1100
    assert not out["flushed_while_full"] and not out["tmp_left_while_full"]  # no half file eats the room
    # Room again: the held rows are written once, the lost ones recorded.
    lost = final["dropped"]
    assert out["flushed"] and final["queued"] == 0 and final["losses_unrecorded"] == 0
    assert final["written"] + lost == 3001 and out["losses"] == lost and out["unique"]
    assert out["kept"] == ["r0"] + [f"r{i}" for i in range(lost + 1, 3001)]  # the newest kept, the oldest lost
