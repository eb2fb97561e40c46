"""Running an expectation suite through Great Expectations: the one module that imports it.

GX 1.x, imported lazily (~3 s): an ephemeral context with one local Data Docs site, one
validation definition per frame, and one summary row per expectation with sample offending
rows. Its API changes between majors; the rest of the data package never sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.clean import SPLITS

# Which frames each scope runs on; frames are built by `build_frames`.
SCOPES = {
    "rows": SPLITS,  # each split's rows, with helper columns
    "train": ("train",),  # dataset-level checks on train only
    "all_rows": ("all_rows",),  # all splits concatenated: cross-split checks (leakage)
    "train_labels": ("train_labels",),  # one row per class (or NER tag) of train
    "all_labels": ("all_labels",),  # one row per (split, class or tag)
}
SAMPLE_LIMIT = 5
# Label tables hold one row per class: a finding there names every offending class, not five.
LABEL_FRAMES = ("train_labels", "all_labels")
LABEL_SAMPLE_LIMIT = 200
MAX_SHOWN_CHARS = 120


def make_context(docs_dir: Path):
    """An ephemeral GX context, no analytics or progress bars, with one local Data Docs site."""
    # heavy (great_expectations): loaded when this runs, so importing tasks.data.gx_suite stays light
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    skip_batch_fingerprints()
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,  # no network here; and no usage pings from a pipeline
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.add_data_docs_site(
        "local_site",
        {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def skip_batch_fingerprints() -> None:
    """Stop GX hashing every in-memory batch whole for a batch marker nobody reads (~1 s per million rows)."""
    # heavy (great_expectations): loaded when this runs, so importing tasks.data.gx_suite stays light
    from great_expectations.execution_engine import pandas_execution_engine

    # GX skips the fingerprint for frames above HASH_THRESHOLD bytes; our lineage digest comes from
    # the clean stage instead. Left alone if a GX release renames the setting.
    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0


def group_by_frame(suite: dict) -> dict[str, list[tuple[int, dict]]]:
    """(position in the suite, expectation) lists per frame name, in suite order."""
    groups: dict[str, list[tuple[int, dict]]] = {}
    for pos, exp in enumerate(suite["expectations"]):
        for frame in SCOPES[exp["meta"]["scope"]]:
            groups.setdefault(frame, []).append((pos, exp))
    return groups


def to_gx_expectation(exp: dict) -> dict:
    # GX 1.x also has a native severity field; keep it in step with meta so Data Docs agree.
    return {"type": exp["type"], "kwargs": exp["kwargs"], "meta": exp["meta"], "severity": exp["meta"]["severity"]}


def run_frame(
    context, source, task: str, frame_name: str, frame: pd.DataFrame, items: list[tuple[int, dict]], params: dict
) -> list[dict]:
    """Validate one frame against its expectations; return one summary row per expectation."""
    # heavy (great_expectations): loaded when this runs, so importing tasks.data.gx_suite stays light
    import great_expectations as gx

    batch = source.add_dataframe_asset(frame_name).add_batch_definition_whole_dataframe("whole")
    suite = context.suites.add(
        gx.ExpectationSuite(name=f"{task}.{frame_name}", expectations=[to_gx_expectation(e) for _, e in items])
    )
    positions = {gx_exp.id: pos for gx_exp, (pos, _) in zip(suite.expectations, items)}
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{task}.{frame_name}", data=batch, suite=suite)
    )
    # SUMMARY keeps a few offending values and their index; COMPLETE would list every row.
    limit = LABEL_SAMPLE_LIMIT if frame_name in LABEL_FRAMES else SAMPLE_LIMIT
    result = definition.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=params,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": limit},
    )
    rows = [summarize_result(r, frame_name, frame, positions.get(r.expectation_config.id, 0)) for r in result.results]
    return sorted(rows, key=lambda r: r["position"])


def describe_expectation(exp_type: str, kwargs: dict) -> str:
    """`expect_x(column)`: the expectation's type and the columns it looks at."""
    cols = (
        kwargs.get("column")
        or kwargs.get("column_list")
        or [kwargs.get(k) for k in ("column_A", "column_B") if kwargs.get(k)]
    )
    cols = ", ".join(cols) if isinstance(cols, list) else cols
    return f"{exp_type}({cols})" if cols else exp_type


def shorten(value):
    """A JSON-friendly, bounded version of a cell value for reports."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 4)
    if isinstance(value, (list, tuple)):
        shown = [shorten(v) for v in value[:12]]
        return [*shown, "..."] if len(value) > 12 else shown
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return value[:MAX_SHOWN_CHARS] + "..."
    return value


def describe_expected(kwargs: dict) -> str:
    """The bounds or sets an expectation compares against, e.g. `min_value=2`."""
    keys = ("min_value", "max_value", "value_set", "regex", "column_set", "type_list")
    return ", ".join(f"{k}={shorten(kwargs[k])}" for k in keys if kwargs.get(k) is not None)


def sample_rows(frame: pd.DataFrame, index_list: list, columns: list[str], limit: int = SAMPLE_LIMIT) -> list[dict]:
    """The offending rows GX pointed at, with their split, raw_index and the named columns."""
    samples = []
    shown = [c for c in ["split", "raw_index", *columns] if c in frame.columns]
    for idx in index_list[:limit]:
        if isinstance(idx, dict) or idx not in frame.index:
            continue
        row = frame.loc[idx]
        samples.append({c: shorten(row[c]) for c in dict.fromkeys(shown)})
    return samples


def summarize_result(res, frame_name: str, frame: pd.DataFrame, position: int) -> dict:
    """Flatten one GX ExpectationValidationResult into a summary row."""
    conf = res.expectation_config
    meta = dict(conf.meta or {})
    kwargs = {k: v for k, v in conf.kwargs.items() if k != "batch_id"}
    result = res.result or {}
    exc = res.exception_info or {}
    if not exc.get("raised_exception") and exc and "exception_message" not in exc:
        # Metric errors arrive keyed by metric id; take the first message.
        exc = next(iter(exc.values()), {})
    unexpected = result.get("unexpected_count")
    checked = [
        c
        for c in [
            kwargs.get("column"),
            kwargs.get("column_A"),
            kwargs.get("column_B"),
            *(kwargs.get("column_list") or []),
        ]
        if c
    ]
    samples: list = []
    if exc.get("raised_exception"):
        observed = "error: " + str(exc.get("exception_message")).removeprefix("Error: ")
    elif "observed_value" in result:
        observed = shorten(result["observed_value"])
        missing = ((result.get("details") or {}).get("mismatched") or {}).get("missing")
        if missing:
            observed = f"missing columns {missing}"
    elif unexpected is not None:
        unit = "rows" if frame_name in SPLITS or frame_name == "all_rows" else "labels"
        observed = f"{unexpected} of {result.get('element_count')} {unit} unexpected"
    else:
        observed = None
    if not res.success and not exc.get("raised_exception"):
        samples = sample_rows(
            frame,
            result.get("partial_unexpected_index_list") or [],
            checked + list(meta.get("sample_columns", [])),
            LABEL_SAMPLE_LIMIT if frame_name in LABEL_FRAMES else SAMPLE_LIMIT,
        )
        if not samples and conf.type == "expect_column_unique_value_count_to_be_between" and checked:
            # A single class: show what there is instead of offending rows.
            vc = frame[checked[0]].astype(str).value_counts().head(SAMPLE_LIMIT)
            samples = [{checked[0]: shorten(k), "rows": int(v)} for k, v in vc.items()]
    return {
        "split": frame_name,
        "expectation": describe_expectation(conf.type, kwargs),
        "severity": meta.get("severity", "critical"),
        "success": bool(res.success),
        "observed": observed,
        "expected": describe_expected(kwargs),
        "unexpected_count": unexpected,
        "unexpected_percent": result.get("unexpected_percent"),
        "samples": samples,
        "kwargs": {k: shorten(v) for k, v in kwargs.items()},
        "hint": meta.get("hint"),
        "position": position,
    }


def run_suite(suite: dict, task: str, frames: dict[str, pd.DataFrame], params: dict, docs_dir: Path) -> list[dict]:
    """Run every expectation on the frames its scope names; build Data Docs; return summary rows."""
    context = make_context(docs_dir)
    source = context.data_sources.add_pandas("cleaned")
    rows: list[dict] = []
    for frame_name, items in group_by_frame(suite).items():
        if frame_name not in frames:
            continue
        rows += run_frame(context, source, task, frame_name, frames[frame_name], items, params)
    context.build_data_docs()
    order = {name: i for i, name in enumerate([*SPLITS, "all_rows", "train_labels", "all_labels"])}
    rows.sort(key=lambda r: (order.get(r["split"], 99), r["position"]))
    for r in rows:
        del r["position"]
    return rows
