"""Validate: run the task's Great Expectations suite over the cleaned splits before training.

The suites are reviewed JSON in `expectations/<task>.json` (GX 1.x suite format). Each
expectation carries in its `meta`:

- `severity`: "critical" (the run stops) or "warning" (reported; stops the run only when
  `data.validation.fail_on_warning` is set);
- `scope`: which frame it runs on (see `tasks.data.gx_suite.SCOPES`);
- optional `sample_columns`: columns shown next to each offending row in reports;
- optional `hint`: what the user can do about a failure.

Values that come from the config are GX suite parameters, written `{"$PARAMETER": "name"}`
in the JSON and filled at run time by `suite_parameters`: `max_chars`, `min_rows`,
`min_class_rows`, `warn_class_rows` (from `data.validation`) and `labels` (the label list resolved by the
clean stage).

Checks GX has no built-in for run on helper columns computed here (names start with `_`):
`_in_train` (leakage), `_n_tokens`/`_n_tags` (NER lengths), `_bio_break` (NER tag order),
`_text` (NER sentence), and on small label tables (class shares, NER tag sets).

Running the suite through Great Expectations is `tasks.data.gx_suite`, the only module that imports it.
"""

from __future__ import annotations

import json
import shutil
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import DataConfig, char_cap
from tasks.data.clean import SPLITS, row_keys
from tasks.data.gx_suite import LABEL_FRAMES, SAMPLE_LIMIT, SCOPES, run_suite
from tasks.io import read_frame, write_json, write_text
from tasks.kinds import kind_of
from tasks.labels import find_bio_break
from tasks.results import CleanResult, ValidationResult

EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
SEVERITIES = ("critical", "warning")


class DataValidationError(ValueError):
    """Critical expectations failed (or warnings, with fail_on_warning); `result` holds the stage's report."""

    def __init__(self, message: str, result: ValidationResult | None = None):
        super().__init__(message)
        self.result = result


# --- the suite -------------------------------------------------------------------------------------


def suite_path(task: str) -> Path:
    """The kind's reviewed suite under expectations/."""
    return EXPECTATIONS_DIR / kind_of(task).expectation_suite


def load_suite(task: str) -> dict:
    """Read `expectations/<task>.json` and check that each expectation has a severity and a scope."""
    path = suite_path(task)
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for task '{task}' at {path}")
    suite = json.loads(path.read_text())
    for i, exp in enumerate(suite.get("expectations", [])):
        meta = exp.get("meta") or {}
        where = f"{path.name}: expectation #{i} ({exp.get('type')})"
        if meta.get("severity") not in SEVERITIES:
            raise ValueError(f"{where}: meta.severity must be one of {SEVERITIES}, got {meta.get('severity')!r}")
        if meta.get("scope") not in SCOPES:
            raise ValueError(f"{where}: meta.scope must be one of {sorted(SCOPES)}, got {meta.get('scope')!r}")
    return suite


def suite_parameters(clean: CleanResult, cfg: DataConfig) -> dict:
    """Values for the suites' `{"$PARAMETER": name}` placeholders."""
    v = cfg.validation
    params: dict[str, Any] = {
        "max_chars": char_cap(v.max_chars, cfg.task),
        "min_rows": v.min_rows,
        "min_class_rows": v.min_class_rows,
        "warn_class_rows": v.warn_class_rows,
    }
    labels = clean.labels or cfg.labels
    if labels is not None:
        params["labels"] = list(labels)
    return params


# --- frames and helper columns ---------------------------------------------------------------------


def read_splits(clean: CleanResult) -> dict[str, pd.DataFrame]:
    return {name: read_frame(clean.splits[name]) for name in SPLITS}


def as_list(value) -> list:
    # A missing tokens/tags cell is reported by not-null checks; helpers treat it as empty.
    return [] if value is None or (isinstance(value, float) and np.isnan(value)) else list(value)


def add_helper_columns(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Add the `_`-prefixed columns the NER suite checks; other tasks need none per split."""
    if not kind_of(task).is_token_level or not {"tokens", "tags"} <= set(df.columns):
        return df
    df = df.copy()
    tokens = df["tokens"].map(as_list)
    tags = df["tags"].map(as_list)
    df["_text"] = tokens.map(" ".join)
    df["_n_tokens"] = tokens.map(len)
    df["_n_tags"] = tags.map(len)
    df["_bio_break"] = pd.Series([find_bio_break(t) for t in tags], index=df.index, dtype=object)
    return df


def text_hashes(df: pd.DataFrame, task: str) -> np.ndarray:
    """64-bit hashes of each row's identity (the clean stage's definition) for leakage checks."""
    keys = df["_text"] if kind_of(task).is_token_level else row_keys(df, task)
    # isin on Arrow-backed strings walks Python objects (~9 s per 1M rows); on uint64 hashes it is
    # a hash-table lookup. A false match needs a 64-bit collision (~1e-8 at a million rows).
    # categorize=False: same hashes without factorising first, ~2x faster on unique texts.
    return pd.util.hash_array(keys.astype(str).to_numpy(dtype=object), categorize=False)


def build_all_rows(splits: dict[str, pd.DataFrame], task: str) -> pd.DataFrame:
    """All splits in one frame with `split` and `_in_train` (text also present in train)."""
    shown = kind_of(task).shown_columns
    parts = []
    try:
        train_keys = text_hashes(splits["train"], task)
        for name in SPLITS:
            df = splits[name]
            part = df[[c for c in ["raw_index", *shown] if c in df.columns]].copy()
            part.insert(0, "split", name)
            # pandas' isin hashes (O(n)); np.isin sorts, ~1.5 s per million rows.
            part["_in_train"] = (
                False if name == "train" else pd.Series(text_hashes(df, task)).isin(train_keys).to_numpy()
            )
            parts.append(part)
    except KeyError:
        # A missing text column is reported by the per-split column checks; skip the leakage frame.
        return pd.DataFrame({"split": pd.Series(dtype=str), "_in_train": pd.Series(dtype=bool)})
    return pd.concat(parts, ignore_index=True)


def add_label_set_columns(df: pd.DataFrame, labels: list[str] | None) -> pd.DataFrame:
    """Multi-label helper columns: `_n_labels` per row and `_outside_labels`, the names not in the label set."""
    if "label" not in df.columns:
        return df
    df = df.copy()
    sets = df["label"].map(as_list)
    known = set(labels or [])
    df["_n_labels"] = sets.map(len)
    df["_outside_labels"] = sets.map(lambda names: ", ".join(str(n) for n in names if n not in known))
    return df


def count_labels(df: pd.DataFrame, task: str) -> pd.Series:
    """Occurrences of each class (rows), label of a label set (rows carrying it) or NER tag (tokens) in one split."""
    if kind_of(task).is_multi_label:
        if "label" not in df.columns:
            return pd.Series(dtype="int64")
        return pd.Series(chain.from_iterable(df["label"].map(as_list)), dtype=object).value_counts()
    if kind_of(task).is_token_level:
        if "tags" not in df.columns:
            return pd.Series(dtype="int64")
        return pd.Series(chain.from_iterable(df["tags"].map(as_list)), dtype=object).value_counts()
    if "label" not in df.columns:
        return pd.Series(dtype="int64")
    return df["label"].dropna().astype(str).value_counts()


def build_label_table(counts: dict[str, pd.Series], task: str, labels: list[str] | None) -> pd.DataFrame:
    """One row per (split, class or tag): rows and share of that split."""
    token_level = kind_of(task).is_token_level
    name = "tag" if token_level else "label"
    rows = []
    for split, vc in counts.items():
        # Declared classes absent from a split get share 0, so the class-share check sees them.
        keys = list(vc.index) + ([x for x in labels if x not in vc.index] if labels and not token_level else [])
        total = int(vc.sum()) or 1
        rows += [
            {"split": split, name: str(k), "rows": int(vc.get(k, 0)), "share": float(vc.get(k, 0)) / total}
            for k in keys
        ]
    return pd.DataFrame(rows, columns=["split", name, "rows", "share"])


def build_frames(splits: dict[str, pd.DataFrame], task: str, labels: list[str] | None) -> dict[str, pd.DataFrame]:
    """Every frame a scope can name: the splits, all rows, and the label tables."""
    frames = {name: add_helper_columns(splits[name], task) for name in SPLITS}
    if kind_of(task).is_multi_label:
        frames = {name: add_label_set_columns(frame, labels) for name, frame in frames.items()}
    frames["all_rows"] = build_all_rows(frames, task)
    if kind_of(task).has_labels:
        counts = {name: count_labels(frames[name], task) for name in SPLITS}
        table = build_label_table(counts, task, labels)
        frames["all_labels"] = table
        frames["train_labels"] = table[table["split"].eq("train")].reset_index(drop=True)
    return frames


# --- the profile -----------------------------------------------------------------------------------


def describe_lengths(lengths: pd.Series) -> dict:
    """p50/p90/p99/max of a numeric series (None when empty)."""
    lengths = lengths.dropna()
    if lengths.empty:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    q = lengths.quantile([0.5, 0.9, 0.99]).to_numpy()
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "max": int(lengths.max())}


def profile_splits(frames: dict[str, pd.DataFrame], task: str) -> dict:
    """Rows, label distribution and length percentiles per split.

    `length_percentiles` are in characters (NER: the tokens joined by spaces); NER also gets
    `token_count_percentiles`, pairs `text_pair_length_percentiles`.
    """
    profile: dict[str, Any] = {"task": task, "rows": {}, "labels": {}, "length_percentiles": {}}
    kind = kind_of(task)
    for name in SPLITS:
        df = frames[name]
        profile["rows"][name] = len(df)
        if kind.predicts_value and "label" in df.columns:
            lab = pd.to_numeric(df["label"], errors="coerce")
            profile["labels"][name] = (
                {
                    "mean": float(lab.mean()),
                    "std": float(lab.std()),
                    "min": float(lab.min()),
                    "p50": float(lab.median()),
                    "max": float(lab.max()),
                }
                if len(lab)
                else {}
            )
        else:
            profile["labels"][name] = {str(k): int(v) for k, v in count_labels(df, task).items()}
        text_col = "_text" if kind.is_token_level else "text"
        if text_col in df.columns:
            profile["length_percentiles"][name] = describe_lengths(df[text_col].str.len())
        if "text_pair" in df.columns:
            profile.setdefault("text_pair_length_percentiles", {})[name] = describe_lengths(df["text_pair"].str.len())
        if "_n_tokens" in df.columns:
            profile.setdefault("token_count_percentiles", {})[name] = describe_lengths(df["_n_tokens"])
    return profile


# --- reports ---------------------------------------------------------------------------------------


def md_cell(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def format_sample(sample: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sample.items())


def render_markdown(rows: list[dict], task: str, success: bool) -> str:
    """The summary as a markdown table (for a Prefect artifact)."""
    failed = [r for r in rows if not r["success"]]
    lines = [
        f"# Data validation: {task} — {'passed' if success else 'FAILED'}",
        "",
        f"{len(rows)} checks, {sum(r['severity'] == 'critical' for r in failed)} critical failures, "
        f"{sum(r['severity'] == 'warning' for r in failed)} warnings.",
        "",
        "| split | expectation | severity | result | observed | expected | sample offending values |",
        "|---|---|---|---|---|---|---|",
    ]
    # Failures first: the artifact is read for what went wrong.
    for r in sorted(rows, key=lambda r: r["success"]):
        status = "pass" if r["success"] else ("**FAIL**" if r["severity"] == "critical" else "warn")
        samples = "; ".join(format_sample(s) for s in r["samples"][:3])
        lines.append(
            f"| {r['split']} | `{r['expectation']}` | {r['severity']} | {status} | "
            f"{md_cell(r['observed'])} | {md_cell(r['expected'])} | {md_cell(samples)} |"
        )
    return "\n".join(lines) + "\n"


def describe_finding(r: dict) -> list[str]:
    """A failed expectation as lines: what was seen, the offending rows (every class, on label tables), the fix."""
    expected = f" (expected {r['expected']})" if r["expected"] else ""
    lines = [f"- [{r['severity']}] {r['split']}: {r['expectation']}: observed {r['observed']}{expected}"]
    if r["split"] in LABEL_FRAMES and r["samples"]:
        named = [
            ", ".join(f"{k}={v!r}" for k, v in s.items() if k in ("label", "tag")) + f" ({s.get('rows')} rows)"
            for s in r["samples"]
        ]
        lines.append(f"    classes: {', '.join(named)}")
    else:
        lines += [f"    e.g. {format_sample(s)}" for s in r["samples"][:SAMPLE_LIMIT]]
    if r.get("hint"):
        lines.append(f"    fix: {r['hint']}")
    return lines


def format_failures(failures: list[dict], task: str, summary_md: str, docs_index: str) -> str:
    """A readable multi-line message naming each failed expectation, what was seen, and samples."""
    lines = [f"data validation failed ({task} suite, {suite_path(task)}): {len(failures)} failed expectation(s)"]
    for r in failures:
        lines += describe_finding(r)
    lines.append(f"Full report: {summary_md} (Data Docs: {docs_index})")
    return "\n".join(lines)


def validate_data(clean: CleanResult, cfg: DataConfig, run_dir: str | Path) -> ValidationResult:
    """Run the task's expectation suite on the cleaned splits; write reports; raise on critical failures."""
    out_dir = Path(run_dir) / "data" / "validation"
    docs_dir = out_dir / "data_docs"
    if docs_dir.exists():
        shutil.rmtree(docs_dir)  # a rerun in the same run folder must not show stale pages
    out_dir.mkdir(parents=True, exist_ok=True)

    suite = load_suite(cfg.task)
    params = suite_parameters(clean, cfg)
    frames = build_frames(read_splits(clean), cfg.task, params.get("labels"))
    profile = profile_splits(frames, cfg.task)
    rows = run_suite(suite, cfg.task, frames, params, docs_dir)

    critical = [r for r in rows if not r["success"] and r["severity"] == "critical"]
    warnings = [r for r in rows if not r["success"] and r["severity"] == "warning"]
    blocking = critical + (warnings if cfg.validation.fail_on_warning else [])
    summary_md = out_dir / "summary.md"
    result = ValidationResult(
        success=not blocking,
        status="warnings" if warnings else "passed",
        warning_count=len(warnings),
        critical_failures=critical,
        warnings=warnings,
        summary_path=write_json(out_dir / "summary.json", rows),
        summary_md=str(summary_md),
        data_docs_dir=str(docs_dir),
        data_docs_index=str(docs_dir / "index.html"),
        profile=profile,
        profile_path=write_json(out_dir / "profile.json", profile),
    )
    write_text(summary_md, render_markdown(rows, cfg.task, result.success))
    if blocking:
        raise DataValidationError(
            format_failures(blocking, cfg.task, result.summary_md, result.data_docs_index), result
        )
    return result
