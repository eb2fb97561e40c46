"""Small shared helpers: parquet frames on disk, content digests, JSON files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd


def write_frames(frames: dict[str, pd.DataFrame], folder: str | Path) -> dict[str, str]:
    """Write each frame as `folder/NAME.parquet`; return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in frames.items():
        path = folder / f"{name}.parquet"
        df.to_parquet(path, index=False)
        paths[name] = str(path)
    return paths


def read_frame(path: str | Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    # Parquet hands lists back as numpy arrays; the code downstream expects lists.
    for col in ("tokens", "tags"):
        if col in df.columns:
            df[col] = df[col].map(list)
    return df


def digest_frames(frames: dict[str, pd.DataFrame]) -> str:
    """A content digest of named frames, independent of file encoding details."""
    h = hashlib.sha256()
    for name in sorted(frames):
        df = frames[name]
        h.update(name.encode())
        h.update(json.dumps(list(df.columns)).encode())
        # Only object columns can hold lists (NER tokens/tags); scanning the others row by row cost
        # seconds per million rows.
        lists = [c for c in df.columns
                 if df[c].dtype == object and df[c].map(lambda v: isinstance(v, (list, tuple))).any()]
        hashable = df.assign(**{c: df[c].map(json.dumps) for c in lists}) if lists else df
        h.update(pd.util.hash_pandas_object(hashable, index=False).values.tobytes())
    return h.hexdigest()[:16]


def digest_path(path: str | Path) -> str:
    """sha256 of a file, or of every file under a folder (names and bytes)."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def write_json(path: str | Path, obj) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str))
    return str(path)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
