"""Collect: read labelled data from its source into canonical columns, snapshot it raw.

Canonical columns: `text`, optional `text_pair`, `label` (string class or float
target); for NER `tokens` and `tags` (lists of strings). A split column names the
source's own split when it has one. Where the data lives is read by tasks/data/sources.py, one
file's format and encoding by tasks/data/readers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig, SourceConfig
from tasks.data.readers import LINE_CONTENT, PARSE_ERROR, DataSourceError
from tasks.data.sources import describe_source, read_source
from tasks.io import digest_frames, write_frames
from tasks.kinds import kind_of
from tasks.labels import LabelSetError
from tasks.results import CollectResult


def map_columns(df: pd.DataFrame, cfg: DataConfig, origin: str) -> pd.DataFrame:
    """Rename the configured columns to the canonical ones; unknown names list what exists."""
    kind = kind_of(cfg.task)
    if kind.is_token_level:
        wanted = {cfg.tokens_column: "tokens", cfg.tags_column: "tags"}
    else:
        wanted = {cfg.text_column: "text", cfg.label_column: "label"}
        if cfg.text_pair_column:
            wanted[cfg.text_pair_column] = "text_pair"
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        present = [c for c in df.columns if c not in ("split", PARSE_ERROR, LINE_CONTENT)]
        field_of = {
            "text": "text_column",
            "label": "label_column",
            "text_pair": "text_pair_column",
            "tokens": "tokens_column",
            "tags": "tags_column",
        }
        hints = ", ".join(f"data.{field_of[wanted[m]]}" for m in missing)
        raise DataSourceError(
            f"column(s) {missing} not found in {origin}; columns present: {present}. Set {hints} to one of them."
        )
    carried = [c for c in ("split", PARSE_ERROR, LINE_CONTENT) if c in df.columns]
    out = df[list(wanted) + carried].rename(columns=wanted)
    if kind.is_token_level:
        out["tokens"] = out["tokens"].map(_as_list)
        out["tags"] = out["tags"].map(_as_list)
    elif kind.predicts_value:
        numeric = pd.to_numeric(out["label"], errors="coerce")
        unreadable = numeric.isna() & out["label"].notna()
        if unreadable.any():  # kept as read, so the quarantine shows "3,5" or "n/a", not an empty cell
            out["label_raw"] = out["label"].astype(str).where(unreadable, None)
        out["label"] = numeric
    else:
        try:
            out["label"] = kind.read_targets(out["label"], cfg.labels, cfg.label_separator, origin)
        except LabelSetError as e:
            raise DataSourceError(str(e)) from None
    return out.reset_index(drop=True)


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.split()
    return [str(v) for v in list(value)]


def read_mapped(src: SourceConfig, cfg: DataConfig) -> pd.DataFrame:
    """One source read and mapped to canonical columns; feedback rows already come as text/label."""
    if src.kind == "feedback":
        cfg = cfg.model_copy(
            update={
                "text_column": "text",
                "label_column": "label",
                "text_pair_column": "text_pair" if cfg.text_pair_column else None,
            }
        )
    raw = read_source(src)
    df = map_columns(raw, cfg, describe_source(src))
    df.attrs["files"] = raw.attrs.get("files", [])  # what each file held and skipped, for the report
    return df


def collect_data(cfg: DataConfig, run_dir: str | Path) -> CollectResult:
    """Read the source, map its columns, and snapshot it as parquet under `run_dir/data/raw`."""
    sources = [cfg.source, *cfg.extra_sources]
    origin = " + ".join(describe_source(s) for s in sources)
    frames = [read_mapped(s, cfg) for s in sources]
    files = [f for frame in frames for f in frame.attrs.get("files", [])]
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise DataSourceError(f"the source {origin} holds no rows; point data.source at a non-empty dataset")
    if "split" in df.columns and cfg.source.split:
        df = df.drop(columns="split")
    out_dir = Path(run_dir) / "data" / "raw"
    paths = write_frames({"all": df}, out_dir)
    return CollectResult(
        path=paths["all"],
        rows=len(df),
        digest=digest_frames({"all": df}),
        source=origin,
        columns=list(df.columns),
        files=files,
        unparseable_lines=sum(f["unparseable_lines"] for f in files),
    )
