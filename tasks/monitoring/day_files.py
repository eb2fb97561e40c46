"""One day of a Parquet log as a few files: parts from any number of writers, merged as they pile up, read
consistently while a merge goes on.

A day folder (date=YYYY-MM-DD/) holds:
  part-<uuid>.parquet               one flush of one writer (level 0)
  compact-<level>-<uuid>.parquet    FAN_IN or more files of the level below, merged; its footer names them
  .compact.lock                     held (flock) by the one process merging this day
  .<name>.tmp                       a file being written; never read

Merging (`compact_day`), under the day's lock so that two processes never merge the same files:
  1. files that a merged file already replaces (a merger died before deleting them) are deleted;
  2. when a level holds FAN_IN files they are copied into one file of the next level, written under a
     temporary name, synced and renamed: from then on a reader that lists the new file skips those it replaces;
  3. the replaced files are deleted.
A row is in exactly one live file at every moment. Readers (`read_days`) take no lock: they list, skip replaced
files, read, and list again; when a merge finished in between (a merged file appeared, or a file vanished under
them) they read again. A day so keeps under FAN_IN files per level, log_FAN_IN(flushes) levels, and each row
is rewritten once per level.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

PART = "part-"
COMPACT = "compact-"
SUFFIX = ".parquet"
LOCK = ".compact.lock"
REPLACES = b"ftflow.replaces"  # footer key: the JSON list of file names a merged file holds the rows of
FAN_IN = 16
READ_ATTEMPTS = 20
STALE_TMP_S = 3600  # a temporary file this old belongs to a writer that died

log = logging.getLogger(__name__)


def level_of(name: str) -> int:
    """0 for a part, n for compact-<n>-<uuid>.parquet."""
    return int(name.split("-", 2)[1]) if name.startswith(COMPACT) else 0


def part_name() -> str:
    return f"{PART}{uuid.uuid4().hex}{SUFFIX}"


def _names(folder: Path) -> list[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and n.startswith((PART, COMPACT)))


def _replaced(folder: Path, names: list[str]) -> set[str]:
    """The files that the merged files among `names` replace (FileNotFoundError: one was merged away meanwhile)."""
    out: set[str] = set()
    for name in names:
        if name.startswith(COMPACT):
            out.update(_replaces(folder / name))
    return out


@functools.lru_cache(maxsize=4096)
def _replaces(path: Path) -> tuple[str, ...]:
    # A merged file is never rewritten (each has a new uuid name): its footer is read once per process.
    # heavy (pyarrow.parquet): loaded when this runs, so importing tasks.monitoring.day_files stays light
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return tuple(json.loads(meta.get(REPLACES, b"[]")))


def live_files(folder: Path) -> tuple[list[Path], set[str]]:
    """The files that hold the folder's rows now, and the names of the merged files listed (to see later merges).

    FileNotFoundError: a merged file was merged away between listing and reading its footer.
    """
    names = _names(folder)
    replaced = _replaced(folder, names)
    return [folder / n for n in names if n not in replaced], {n for n in names if n.startswith(COMPACT)}


def read_days(folders: list[Path], schema: pa.Schema, where=None) -> pa.Table:
    """The rows of `folders` (filtered by the dataset expression `where`), each exactly once though a merge runs."""
    # heavy (pyarrow.dataset): loaded when this runs, so importing tasks.monitoring.day_files stays light
    import pyarrow.dataset as ds

    for _ in range(READ_ATTEMPTS):
        files: list[Path] = []
        merged: dict[Path, set[str]] = {}
        try:
            for folder in folders:
                live, merged[folder] = live_files(folder)
                files += live
            table = (
                ds.dataset([str(f) for f in files], schema=schema, format="parquet").to_table(filter=where)
                if files
                else schema.empty_table()
            )
        except OSError as e:
            if isinstance(e, FileNotFoundError) or not all(f.exists() for f in files):
                continue  # a merge deleted a file this read had listed: list again
            raise
        # A merged file that appeared during the read may hold rows whose parts this listing missed.
        if all({n for n in _names(f) if n.startswith(COMPACT)} <= merged[f] for f in folders):
            return table
    raise RuntimeError(
        f"prediction log: {len(folders)} day folder(s) under {folders[0].parent} kept changing during "
        f"{READ_ATTEMPTS} reads; is something other than ftflow rewriting the files?"
    )


def write_part(folder: Path, table: pa.Table) -> Path:
    """`table` as a new part of `folder`, written under a temporary name and renamed (never read half-written)."""
    # heavy (pyarrow.parquet): loaded when this runs, so importing tasks.monitoring.day_files stays light
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    name = part_name()
    tmp = folder / f".{name}.tmp"
    try:
        pq.write_table(table, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half file behind to fill it further
        raise
    return tmp.replace(folder / name)


@contextlib.contextmanager
def _day_lock(folder: Path) -> Iterator[bool]:
    """The day's merge lock, if no other process holds it (True), else False at once: the other one merges."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a full disk or a read-only folder: no merge now, the rows stay where they are
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _merge(folder: Path, names: list[str], level: int, schema: pa.Schema) -> str:
    """Copy `names` into one new file of `level`, synced before it is renamed into place; returns its name."""
    # heavy (pyarrow.parquet): loaded when this runs, so importing tasks.monitoring.day_files stays light
    import pyarrow.parquet as pq

    name = f"{COMPACT}{level}-{uuid.uuid4().hex}{SUFFIX}"
    tmp = folder / f".{name}.tmp"
    with_meta = schema.with_metadata({**(schema.metadata or {}), REPLACES: json.dumps(names).encode()})
    try:
        with pq.ParquetWriter(tmp, with_meta) as writer:
            for source in names:  # one source at a time: a large day is never held in memory whole
                writer.write_table(pq.read_table(folder / source, schema=schema).replace_schema_metadata(None))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the sources are deleted next: the merged rows must be on disk first
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(folder / name)
    _sync_dir(folder)
    return name


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compact_day(folder: Path, schema: pa.Schema, fan_in: int = FAN_IN) -> int:
    """Merge the day's files level by level wherever a level holds `fan_in` or more; returns how many were merged.

    Returns 0 at once when another process is merging this day. An error (a full disk) leaves every row where
    it was and is raised.
    """
    if fan_in < 2:
        raise ValueError(f"fan_in must be at least 2, not {fan_in}")
    merged = 0
    with _day_lock(folder) as held:
        if not held:
            return 0
        names = _names(folder)
        replaced = _replaced(folder, names)
        for name in replaced & set(names):
            (folder / name).unlink(missing_ok=True)
        live = [n for n in names if n not in replaced]
        level = 0
        while any(level_of(n) >= level for n in live):
            group = [n for n in live if level_of(n) == level]
            if len(group) >= fan_in:
                new = _merge(folder, group, level + 1, schema)
                for name in group:
                    (folder / name).unlink(missing_ok=True)
                live = [n for n in live if n not in group] + [new]
                merged += len(group)
            level += 1
        _remove_stale_tmp(folder)
    return merged


def _remove_stale_tmp(folder: Path) -> None:
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()


def level0_count(folder: Path) -> int:
    return sum(1 for n in _names(folder) if n.startswith(PART))
