"""Cache keys for the data stage, and moving a reused result's files into the new run folder.

An unchanged re-run skips collect, clean and validate: each stage's Prefect task is cached
under a key made of content digests (the source's bytes or pinned identity, the raw or
cleaned data's digest), the data config, the code of the data-stage modules, and for
validate the expectation suite. A reused result names files in the earlier run's folder;
they are copied into the new run folder so every run folder stays complete on its own, and
when the earlier folder is gone the stage simply runs again.

Sources whose content cannot be known without reading them (SQL, an unpinned hub dataset)
get no key for collect: it always runs, and clean is still reused when the rows are the same.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
from pathlib import Path

from tasks.config import DataConfig, SourceConfig

TASKS_DIR = Path(__file__).resolve().parents[1]
# The code whose change must invalidate a cached data stage.
CODE_FILES = (
    "data/collect.py",
    "data/readers.py",
    "data/sources.py",
    "data/clean.py",
    "data/validate.py",
    "data/gx_suite.py",
    "data/cache.py",
    "io.py",
    "config/base.py",
    "config/sources.py",
    "config/data.py",
    "secrets.py",
    "labels.py",
    "kinds/__init__.py",
    "kinds/base.py",
    "kinds/classification.py",
    "kinds/regression.py",
    "kinds/ner.py",
    "inference/normalize.py",
    "results.py",
)
# The sub-folder of `run_dir/data` each stage writes.
STAGE_FOLDERS = {"collect": "raw", "clean": "clean", "validate": "validation"}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the data-stage modules' source."""
    h = hashlib.sha256()
    for name in CODE_FILES:
        h.update(name.encode())
        h.update((TASKS_DIR / name).read_bytes())
    return h.hexdigest()


def digest_files(paths: list[Path]) -> str:
    """sha256 over the files' names and bytes, read in 1 MB chunks."""
    h = hashlib.sha256()
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            h.update(str(f).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


def source_fingerprint(src: SourceConfig) -> str | None:
    """What identifies the source's content, or None when only reading it would tell."""
    # heavy (pandas via tasks.data.sources): loaded when this runs, so importing tasks.data.cache stays light
    from tasks.data.sources import PACKAGE_FILES, source_files

    try:
        if src.kind in ("file", "conll"):
            files = source_files(src)
            return digest_files(files) if files and all(f.exists() for f in files) else None
        if src.kind == "disk":
            assert src.path is not None, "SourceConfig refuses a disk source without a path"
            return digest_files([Path(src.path)]) if Path(src.path).exists() else None
        if src.kind == "package" and src.name in PACKAGE_FILES:
            dist, relpath = PACKAGE_FILES[src.name]
            return f"{dist}=={importlib.metadata.version(dist)}:{relpath}"
        if src.kind == "url":
            assert src.sha256 is not None, "SourceConfig refuses a url source without its sha256"
            return f"sha256:{src.sha256.lower()}"  # the download is checked against it
        if src.kind == "hub" and src.revision and _COMMIT.match(src.revision):
            return f"hub:{src.name}/{src.config}/{src.split}@{src.revision}"
    except (OSError, importlib.metadata.PackageNotFoundError):
        return None  # the stage itself reports the problem with its own clear error
    return None


def sources_fingerprint(data: DataConfig) -> str | None:
    """The fingerprint of `source` and every extra source; None when any one is unknown (feedback grows)."""
    prints = [source_fingerprint(s) for s in [data.source, *data.extra_sources]]
    return None if None in prints else "+".join(p for p in prints if p is not None)


def suite_digest(task: str) -> str:
    # heavy (numpy, pandas, pyarrow via tasks.data.validate): loaded when this runs, so importing tasks.data.cache stays light
    from tasks.data.validate import suite_path

    path = suite_path(task)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "none"


def stage_key(stage: str, upstream: str | None, data: DataConfig) -> str | None:
    """The cache key of one data stage; None (no caching) when the upstream content is unknown."""
    if upstream is None or os.environ.get("FTFLOW_DATA_CACHE", "1") == "0":
        return None
    payload = json.dumps([stage, upstream, data.model_dump(mode="json"), code_digest()], sort_keys=True)
    return f"ftflow-data-{stage}-{hashlib.sha256(payload.encode()).hexdigest()[:32]}"


def relocate(value, old: str, new: str):
    """Every string path under `old` inside a (nested) result, rewritten to lie under `new`."""
    # A stage's typed result (tasks/results.py: CollectResult, CleanResult, ValidationResult), an instance
    # (never a class): a copy with the new paths.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: relocate(getattr(value, f.name), old, new) for f in dataclasses.fields(value)}
        )
    if isinstance(value, dict):
        return {k: relocate(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [relocate(v, old, new) for v in value]
    if isinstance(value, str) and (value == old or value.startswith(old + os.sep)):
        return new + value[len(old) :]
    return value


def paths_in(value, root: str) -> list[str]:
    """The string paths under `root` that a (nested) result names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [p for f in dataclasses.fields(value) for p in paths_in(getattr(value, f.name), root)]
    if isinstance(value, dict):
        return [p for v in value.values() for p in paths_in(v, root)]
    if isinstance(value, list):
        return [p for v in value for p in paths_in(v, root)]
    return [value] if isinstance(value, str) and value.startswith(root + os.sep) else []


def adopt_result(ref, stage: str, from_dir: str | Path, to_dir: str | Path):
    """Copy a stage's files from an earlier run folder into this one and point the result at them.

    Returns None when the earlier files are gone (the caller runs the stage again). Copies, not
    links: a later rewrite of a file in one run folder must never change another run's data.
    """
    old, new = str(Path(from_dir)), str(Path(to_dir))
    if not all(Path(p).exists() for p in paths_in(ref, old)):
        return None
    if old == new:
        return ref
    folder = Path("data") / STAGE_FOLDERS[stage]
    target = Path(new) / folder
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(Path(old) / folder, target)
    return relocate(ref, old, new)
