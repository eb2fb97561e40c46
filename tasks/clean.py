"""Clean: normalise texts, assign stable splits, and quarantine every row a rule removes.

Nothing is silently dropped: each removed row lands in `quarantine.parquet` with its
reason and its index in the raw snapshot, and each rule is counted in the report.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.config import DataConfig
from tasks.io import digest_frames, read_frame, write_frames, write_json

SPLITS = ("train", "validation", "test")
# C0/C1 control characters except tab/newline, which whitespace collapse handles.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_BIO = re.compile(r"^(O|[BI]-.+)$")


class EmptyDatasetError(ValueError):
    """No usable rows remain; the message says which rules removed them."""


def normalize_text(s: pd.Series, cfg: DataConfig) -> pd.Series:
    """NFKC, control characters out, whitespace collapsed (as configured)."""
    s = s.astype("string")
    if cfg.clean.normalize_unicode:
        s = s.str.normalize("NFKC")
    s = s.str.replace(_CONTROL, "", regex=True)
    if cfg.clean.collapse_whitespace:
        s = s.str.replace(r"\s+", " ", regex=True).str.strip()
    return s


def row_keys(df: pd.DataFrame, task: str) -> pd.Series:
    """The text identity of each row: what duplicates, conflicts and leakage compare."""
    if task == "ner":
        return df["tokens"].map(" ".join)
    if "text_pair" in df.columns:
        return df["text"].astype(str) + "\x1f" + df["text_pair"].astype(str)
    return df["text"].astype(str)


def hash_unit(keys: pd.Series, salt: int) -> np.ndarray:
    """Map each key to [0, 1) deterministically: the same text always gets the same number."""
    hashed = pd.util.hash_array(keys.astype(str).to_numpy(dtype=object), hash_key=f"{salt:016d}"[-16:])
    return hashed.astype(np.float64) / float(2**64)


def assign_splits(df: pd.DataFrame, keys: pd.Series, cfg: DataConfig) -> pd.Series:
    """Use the source's splits, or hash each row's text into train/validation/test."""
    sp = cfg.splits
    u = hash_unit(keys, sp.seed)
    hashed = np.where(u < sp.test_fraction, "test",
                      np.where(u < sp.test_fraction + sp.validation_fraction, "validation", "train"))
    if "split" in df.columns and sp.use_source_splits:
        split = df["split"].astype(str)
        present = set(split.unique())
        # A source with only some splits (e.g. train+test) gets the missing ones carved from train.
        from_train = split.eq("train")
        carved = pd.Series(hashed, index=df.index)
        for name in ("validation", "test"):
            if name not in present:
                split = split.where(~(from_train & carved.eq(name)), name)
        return split
    return pd.Series(hashed, index=df.index)


def augment_rows(train: pd.DataFrame, copies: int, seed: int) -> pd.DataFrame:
    """EDA-style augmentation without synonyms: one random swap and one random deletion per copy."""
    rng = random.Random(seed)
    rows = []
    for _, row in train.iterrows():
        words = str(row["text"]).split()
        if len(words) < 4:
            continue
        for _ in range(copies):
            w = words[:]
            i, j = rng.sample(range(len(w)), 2)
            w[i], w[j] = w[j], w[i]
            del w[rng.randrange(len(w))]
            new = row.copy()
            new["text"] = " ".join(w)
            rows.append(new)
    return pd.DataFrame(rows, columns=train.columns)


def _quarantine(df: pd.DataFrame, mask: pd.Series, reason: str, bins: list, report: dict) -> pd.DataFrame:
    n = int(mask.sum())
    report["removed"][reason] = report["removed"].get(reason, 0) + n
    if n:
        q = df[mask].copy()
        q["reason"] = reason
        bins.append(q)
    return df[~mask]


def clean_frame(raw: pd.DataFrame, cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    """Apply every cleaning rule; return (splits, quarantine, report)."""
    df = raw.copy()
    df["raw_index"] = np.arange(len(df))
    report: dict = {"rows_in": len(df), "removed": {}, "changed": {}}
    bins: list[pd.DataFrame] = []
    task = cfg.task

    if task == "ner":
        lengths_differ = df["tokens"].map(len) != df["tags"].map(len)
        df = _quarantine(df, lengths_differ, "tokens_tags_length_mismatch", bins, report)
        df = _quarantine(df, df["tokens"].map(len).eq(0), "empty_text", bins, report)
        bad_tag = df["tags"].map(lambda tags: not all(_BIO.match(t) for t in tags))
        df = _quarantine(df, bad_tag, "invalid_bio_tag", bins, report)
    else:
        for col in ("text", "text_pair"):
            if col not in df.columns:
                continue
            before = df[col]
            df[col] = normalize_text(df[col], cfg)
            report["changed"][f"{col}_normalized"] = int((before.astype("string") != df[col]).fillna(True).sum())
            df = _quarantine(df, df[col].isna() | df[col].eq(""), "empty_text", bins, report)
            df = _quarantine(df, df[col].str.len() > cfg.clean.max_chars, "too_long", bins, report)
        df = _quarantine(df, df["label"].isna(), "missing_label", bins, report)
        if task != "regression" and cfg.labels:
            df = _quarantine(df, ~df["label"].isin(cfg.labels), "unknown_label", bins, report)

    keys = row_keys(df, task)
    df["split"] = assign_splits(df, keys, cfg)
    unknown_split = ~df["split"].isin(SPLITS)
    df = _quarantine(df, unknown_split, "unknown_split", bins, report)
    keys = keys[df.index]

    if cfg.max_rows and len(df) > cfg.max_rows:
        # Keep a stable sample: the rows with the lowest hash under a second salt.
        order = pd.Series(hash_unit(keys, cfg.splits.seed + 1), index=df.index)
        keep = order.rank(method="first") <= cfg.max_rows
        report["sampled_out"] = int((~keep).sum())  # not bad rows: left out by data.max_rows
        df, keys = df[keep], keys[keep]

    label_key = df["label"].astype(str) if task != "ner" else df["tags"].map(" ".join)
    # Order so that the copy kept among duplicates is the train one.
    split_rank = df["split"].map({"train": 0, "validation": 1, "test": 2})
    order = np.lexsort((df["raw_index"].to_numpy(), split_rank.to_numpy()))
    df, keys, label_key = df.iloc[order], keys.iloc[order], label_key.iloc[order]

    if cfg.clean.drop_duplicates:
        # Within a split only: a copy in another split is leakage, reported as such below.
        dup = pd.DataFrame({"k": keys, "l": label_key, "s": df["split"]}).duplicated()
        df = _quarantine(df, dup, "duplicate", bins, report)
        keys, label_key = keys[df.index], label_key[df.index]
    if cfg.clean.drop_conflicts and task in ("classification", "pair_classification", "ner"):
        n_labels = pd.DataFrame({"k": keys, "l": label_key}).groupby("k")["l"].transform("nunique")
        df = _quarantine(df, n_labels > 1, "conflicting_labels", bins, report)
        keys = keys[df.index]
    if cfg.clean.drop_leakage:
        train_keys = set(keys[df["split"].eq("train")])
        leak = df["split"].ne("train") & keys.isin(train_keys)
        df = _quarantine(df, leak, "leakage", bins, report)

    df = df.sort_values("raw_index")
    splits = {name: df[df["split"].eq(name)].drop(columns="split").reset_index(drop=True) for name in SPLITS}
    if cfg.clean.augment and task in ("classification", "regression"):
        extra = augment_rows(splits["train"], cfg.clean.augment_copies, cfg.splits.seed)
        report["augmented_rows"] = len(extra)
        splits["train"] = pd.concat([splits["train"], extra], ignore_index=True)

    cols = list(raw.columns.drop("split", errors="ignore")) + ["split", "raw_index", "reason"]
    quarantine = (pd.concat(bins, ignore_index=True) if bins else pd.DataFrame(columns=cols))
    report["rows_out"] = {name: len(frame) for name, frame in splits.items()}
    report["quarantined"] = len(quarantine)
    return splits, quarantine, report


def resolve_labels(splits: dict[str, pd.DataFrame], cfg: DataConfig) -> list[str] | None:
    """The label list in id order: declared, or sorted from the data. None for regression."""
    if cfg.task == "regression":
        return None
    if cfg.labels:
        return list(cfg.labels)
    if cfg.task == "ner":
        tags = {t for frame in splits.values() for tags in frame["tags"] for t in tags}
        entity_types = sorted({t[2:] for t in tags if t != "O"})
        return ["O"] + [f"{p}-{e}" for e in entity_types for p in ("B", "I")]
    return sorted({str(v) for frame in splits.values() for v in frame["label"]})


def clean_data(raw_path: str, cfg: DataConfig, run_dir: str | Path) -> dict:
    """Clean the raw snapshot into train/validation/test parquet files plus quarantine and report."""
    raw = read_frame(raw_path)
    splits, quarantine, report = clean_frame(raw, cfg)
    out_dir = Path(run_dir) / "data" / "clean"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Written before any refusal below, so a failed run still shows what was removed and why.
    q_path = write_frames({"quarantine": quarantine}, out_dir)["quarantine"]
    write_json(out_dir / "cleaning_report.json", report)
    if len(splits["train"]) == 0:
        raise EmptyDatasetError(
            f"no training rows left after cleaning ({report['rows_in']} in; removed {report['removed']}); "
            f"see {q_path} for every removed row and its reason"
        )
    for name in ("validation", "test"):
        if len(splits[name]) == 0:
            raise EmptyDatasetError(
                f"the {name} split is empty after cleaning (rows per split {report['rows_out']}); "
                f"raise data.splits.{name}_fraction or add data; removed rows are in {q_path}"
            )
    labels = resolve_labels(splits, cfg)
    paths = write_frames(splits, out_dir)
    write_json(out_dir / "labels.json", labels)
    return {"dir": str(out_dir), "splits": paths, "quarantine": q_path, "labels": labels,
            "report": report, "report_path": str(out_dir / "cleaning_report.json"),
            "digest": digest_frames(splits)}
