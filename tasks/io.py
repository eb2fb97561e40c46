"""Small shared helpers: parquet frames on disk, content digests, JSON files, atomic writes, folder locks.

Every file the pipeline writes goes to a temporary name in the same folder and is renamed into
place (`atomic_path`): a full disk or a kill leaves the old file or no file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

LOCK_FILE = ".ftflow.lock"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed onto `path`.

    Works for files and folders (a folder replaces the old one whole). On any error the
    temporary is removed and `path` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.is_dir():  # left by an earlier process of the same id that was killed
        shutil.rmtree(tmp)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_csv(df: pd.DataFrame, path: str | Path) -> str:
    """Write a frame as CSV (no index) atomically; return the path."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return str(path)


def save_figure(fig, path: str | Path, **options) -> str:
    """Save a matplotlib figure atomically (its format from the path's suffix); return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **options)
    return str(path)


def write_text(path: str | Path, text: str) -> str:
    """Write a text file atomically; return its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return str(path)


def write_parquet(df: pd.DataFrame, path: str | Path) -> str:
    """Write a frame as parquet atomically; return its path."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return str(path)


class FolderBusy(ValueError):
    """Another process works in the folder (it holds the folder's lock)."""


@contextlib.contextmanager
def locked_folder(folder: str | Path, what: str = "a flow") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` while the block runs; refuse at once if another process holds it.

    The lock is an OS file lock (flock): it ends with its process, so a killed flow leaves no
    stale lock behind. The lock file records who holds it, for the refusal message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_FILE
    with open(lock_path, "a+") as fh:  # closing releases the lock
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderBusy(
                f"{folder} is in use by {holder}; wait for it to finish (or stop it) and try again. "
                f"Two flows in one run folder would overwrite each other's files"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} (pid {os.getpid()} on {socket.gethostname()})")
        fh.flush()
        yield folder


def write_frames(frames: dict[str, pd.DataFrame], folder: str | Path) -> dict[str, str]:
    """Write each frame as `folder/NAME.parquet`; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in frames.items():
        paths[name] = write_parquet(df, folder / f"{name}.parquet")
    return paths


def read_frame(path: str | Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    # Parquet hands lists back as numpy arrays; the code downstream expects lists.
    for col in ("tokens", "tags"):
        if col in df.columns:
            df[col] = df[col].map(list)
    return df


def _is_sequence(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def digest_frames(frames: dict[str, pd.DataFrame]) -> str:
    """A content digest of named frames, independent of file encoding details."""
    h = hashlib.sha256()
    for name in sorted(frames):
        df = frames[name]
        h.update(name.encode())
        h.update(json.dumps(list(df.columns)).encode())
        # Only object columns can hold lists (NER tokens/tags, label sets; Parquet gives them back as arrays);
        # scanning the others row by row cost seconds per million rows.
        lists = [c for c in df.columns if df[c].dtype == object and df[c].map(_is_sequence).any()]
        hashable = (
            df.assign(
                **{c: df[c].map(lambda v: json.dumps(list(v) if isinstance(v, np.ndarray) else v)) for c in lists}
            )
            if lists
            else df
        )
        h.update(pd.util.hash_pandas_object(hashable, index=False).values.tobytes())
    return h.hexdigest()[:16]


def write_json(path: str | Path, obj) -> str:
    """Write `obj` as indented JSON, atomically; return the path."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str))


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
