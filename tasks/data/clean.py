"""Clean: normalise texts, assign stable splits, and quarantine every row a rule removes.

Nothing is silently dropped: each removed row lands in `quarantine.parquet` with its
reason, its index in the raw snapshot and the split it would have had, and each rule is
counted in the report.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tasks.config import DataConfig, char_cap
from tasks.data.readers import LINE_CONTENT, PARSE_ERROR
from tasks.inference.normalize import normalize_strings
from tasks.io import digest_frames, read_frame, write_frames, write_json
from tasks.kinds import kind_of
from tasks.kinds.multi_label import label_set_text
from tasks.labels import entity_types, is_bio_tag, tag_set
from tasks.results import CleanResult

SPLITS = ("train", "validation", "test")
ARROW_STRING = pd.StringDtype("pyarrow")


class EmptyDatasetError(ValueError):
    """No usable rows remain; the message says which rules removed them."""


class LabelSpellingError(ValueError):
    """Labels that differ only by case; the message lists the spellings and how to map them."""


def normalize_labels(labels: pd.Series, cfg: DataConfig, report: dict) -> pd.Series:
    """Class labels stripped of surrounding whitespace, renamed by data.label_map, one spelling per class.

    Spellings that differ only by case ("positive", "Positive") become the declared one when
    data.labels lists exactly one of them; when it lists none, the run is refused, listing every
    spelling with its count: guessing which is meant would silently merge or split classes.
    """
    present = labels.notna()
    text = labels.astype(object).where(present, None)
    stripped = text[present].astype(str).str.strip()
    report["changed"]["label_whitespace_stripped"] = int((stripped != text[present]).sum())
    text[present] = stripped
    if cfg.label_map:
        renamed = text[present].map(lambda v: cfg.label_map.get(v, v))
        report["changed"]["label_mapped"] = int((renamed != text[present]).sum())
        text[present] = renamed
    counts = text[present].value_counts()
    declared = set(cfg.labels or [])
    folded: dict[str, str] = {}
    clashes: list[pd.Series] = []
    for _, group in counts.groupby(counts.index.str.casefold(), sort=False):
        chosen = [v for v in group.index if v in declared]
        if len(group) > 1 and len(chosen) == 1:
            folded.update({v: chosen[0] for v in group.index if v != chosen[0]})
        elif len(group) > 1 and not chosen:  # two declared spellings are two classes, as declared
            clashes.append(group)
    if clashes:
        listed = "; ".join(", ".join(f"{v!r} ({n} rows)" for v, n in g.items()) for g in clashes)
        common, rare = clashes[0].index[0], clashes[0].index[-1]
        raise LabelSpellingError(
            f"labels that differ only by case would become separate classes: {listed}. Say which spelling "
            f"is meant with data.label_map (e.g. {{{rare!r}: {common!r}}}) or by listing it in data.labels, "
            "or fix the data"
        )
    if folded:
        report["changed"]["label_case_folded"] = int(text[present].isin(list(folded)).sum())
        text[present] = text[present].replace(folded)
    return text


def normalize_label_sets(label_sets: pd.Series, cfg: DataConfig, report: dict) -> pd.Series:
    """Each label set with its names stripped and renamed by data.label_map, without repeats, sorted.

    Case spellings follow the single-label rule: one declared spelling wins, two undeclared ones refuse the run.
    """
    present = label_sets.notna()
    flat = pd.Series([name for names in label_sets[present] for name in names], dtype=object)
    spelled = normalize_labels(flat, cfg, report) if len(flat) else flat
    renamed = dict(zip(flat, spelled))
    out = label_sets.astype(object).copy()
    out[present] = [sorted({renamed[n] for n in names}) for names in label_sets[present]]
    return out


def label_keys_of(df: pd.DataFrame, task: str) -> pd.Series:
    """One string per row's target, equal for equal targets: what duplicates and conflicts compare."""
    kind = kind_of(task)
    if kind.is_token_level:
        return df["tags"].map(" ".join)
    if kind.is_multi_label:
        return df["label"].map(lambda names: label_set_text(names) if names is not None else "\x00")
    return df["label"].astype(str)


def to_arrow_strings(s: pd.Series) -> pa.Array:
    """The column as one Arrow string array: non-strings through str(), missing stays missing."""
    arr = pa.array(s.astype(ARROW_STRING).array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def normalize_text(s: pd.Series, cfg: DataConfig) -> pd.Series:
    """NFKC, control characters out, whitespace collapsed (as configured); Arrow strings out."""
    arr = normalize_strings(to_arrow_strings(s), cfg.clean.normalize_unicode, cfg.clean.collapse_whitespace)
    return pd.Series(pd.arrays.ArrowStringArray(arr), index=s.index, name=s.name)


def row_keys(df: pd.DataFrame, task: str) -> pd.Series:
    """The text identity of each row: what duplicates, conflicts and leakage compare."""
    if kind_of(task).is_token_level:
        return df["tokens"].map(" ".join)
    if "text_pair" in df.columns:
        return df["text"].astype(str) + "\x1f" + df["text_pair"].astype(str)
    return df["text"].astype(str)


def hash_unit(keys: pd.Series, salt: int) -> np.ndarray:
    """Map each key to [0, 1) deterministically: the same text always gets the same number."""
    # categorize=False gives the same hashes as the default without factorising first (2x faster).
    hashed = pd.util.hash_array(
        keys.astype(str).to_numpy(dtype=object), hash_key=f"{salt:016d}"[-16:], categorize=False
    )
    return hashed.astype(np.float64) / float(2**64)


def assign_splits(df: pd.DataFrame, keys: pd.Series, cfg: DataConfig, usable: np.ndarray | None = None) -> pd.Series:
    """Use the source's splits, or hash each row's text into train/validation/test.

    usable: rows still kept by the row rules. A source split with no usable row (GLUE's
    unlabelled test split) counts as missing, so it is carved from train like an absent one.
    """
    sp = cfg.splits
    u = hash_unit(keys, sp.seed)
    hashed = np.where(
        u < sp.test_fraction, "test", np.where(u < sp.test_fraction + sp.validation_fraction, "validation", "train")
    )
    if "split" in df.columns and sp.use_source_splits:
        # Rows without a source split (feedback appended to a split source) take their hashed split.
        split = df["split"].where(df["split"].notna(), pd.Series(hashed, index=df.index)).astype(str)
        present = set(split[usable].unique()) if usable is not None else set(split.unique())
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
    source, texts = [], []
    for pos, text in enumerate(train["text"].astype(str)):
        words = text.split()
        if len(words) < 4:
            continue
        for _ in range(copies):
            w = words[:]
            i, j = rng.sample(range(len(w)), 2)
            w[i], w[j] = w[j], w[i]
            del w[rng.randrange(len(w))]
            source.append(pos)
            texts.append(" ".join(w))
    extra = train.iloc[source].reset_index(drop=True)
    extra["text"] = pd.Series(texts, dtype=train["text"].dtype)
    return extra


def mark(n: int, positions: np.ndarray) -> np.ndarray:
    """A boolean mask of length n, True at `positions`."""
    mask = np.zeros(n, dtype=bool)
    mask[positions] = True
    return mask


class Rules:
    """Which rows are still kept, and why each removed row was removed (in the raw snapshot's order)."""

    def __init__(self, n: int, report: dict):
        self.kept = np.ones(n, dtype=bool)
        self.reason = np.full(n, None, dtype=object)
        self.report = report

    def remove(self, mask, reason: str) -> None:
        """Quarantine the kept rows that `mask` selects, counting them under `reason`."""
        hit = np.asarray(mask, dtype=bool) & self.kept
        self.report["removed"][reason] = self.report["removed"].get(reason, 0) + int(hit.sum())
        self.reason[hit] = reason
        self.kept &= ~hit


def apply_row_rules(df: pd.DataFrame, cfg: DataConfig, rules: Rules) -> None:
    """Normalise texts in place; quarantine empty, over-long, unlabelled and malformed rows."""
    if PARSE_ERROR in df.columns:  # lines the collect stage could not parse: quarantined first, with their line
        rules.remove(df[PARSE_ERROR].notna().to_numpy(), "unparseable_line")
    kind = kind_of(cfg.task)
    if kind.is_token_level:
        n_tokens = df["tokens"].map(len).to_numpy()
        rules.remove(n_tokens != df["tags"].map(len).to_numpy(), "tokens_tags_length_mismatch")
        rules.remove(n_tokens == 0, "empty_text")
        rules.remove(df["tags"].map(lambda tags: not all(is_bio_tag(t) for t in tags)), "invalid_bio_tag")
        return
    if not (kind.is_single_label or kind.predicts_value or kind.is_multi_label):
        raise kind.unsupported("cleaning rules")
    for col in ("text", "text_pair"):
        if col not in df.columns:
            continue
        before = df[col]
        df[col] = normalize_text(before, cfg)
        changed = (before.astype(ARROW_STRING) != df[col]).fillna(True).to_numpy(dtype=bool) & rules.kept
        rules.report["changed"][f"{col}_normalized"] = int(changed.sum())
        rules.remove((df[col].isna() | df[col].eq("")).to_numpy(dtype=bool), "empty_text")
        cap = char_cap(cfg.clean.max_chars, cfg.task)
        if cap is not None:
            rules.remove(df[col].str.len().gt(cap).fillna(False).to_numpy(dtype=bool), "too_long")
    if kind.is_single_label:
        df["label"] = normalize_labels(df["label"], cfg, rules.report)
    if "label_raw" in df.columns:  # a regression target that is not a number ("n/a", "3,5")
        rules.remove(df["label_raw"].notna().to_numpy(), "invalid_label")
    rules.remove(df["label"].isna().to_numpy(), "missing_label")
    if kind.is_single_label and cfg.labels:
        rules.remove(~df["label"].isin(cfg.labels).to_numpy(), "unknown_label")
    if kind.is_multi_label:
        df["label"] = normalize_label_sets(df["label"], cfg, rules.report)
        if cfg.labels:
            declared = set(cfg.labels)
            unknown = df["label"].map(lambda names: names is not None and not set(names) <= declared)
            rules.remove(unknown.to_numpy(dtype=bool), "unknown_label")


def select_sampled_out(keys: pd.Series, kept: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The kept rows left out by data.max_rows: all but a stable sample (lowest hash under a second salt)."""
    pos = np.flatnonzero(kept)
    if not cfg.max_rows or len(pos) <= cfg.max_rows:
        return np.zeros(len(kept), dtype=bool)
    order = np.argsort(hash_unit(keys.iloc[pos], cfg.splits.seed + 1), kind="stable")
    return mark(len(kept), pos[order[cfg.max_rows :]])


def apply_set_rules(keys: pd.Series, label_key: pd.Series, split: np.ndarray, cfg: DataConfig, rules: Rules) -> None:
    """Duplicates within a split, texts with conflicting labels, and held-out texts also in train."""
    # Exact integer codes of text and label: the rules below compare ints, not strings.
    k = pd.factorize(keys, use_na_sentinel=False)[0]
    lab = pd.factorize(label_key, use_na_sentinel=False)[0]
    if cfg.clean.drop_duplicates:
        # Within a split only, keeping the first in raw order: a copy in another split is leakage.
        pos = np.flatnonzero(rules.kept)
        dup = pd.DataFrame({"k": k[pos], "l": lab[pos], "s": split[pos]}).duplicated().to_numpy()
        rules.remove(mark(len(k), pos[dup]), "duplicate")
    if cfg.clean.drop_conflicts and kind_of(cfg.task).has_labels:  # a value may differ between annotators
        pos = np.flatnonzero(rules.kept)
        n_labels = pd.Series(lab[pos]).groupby(k[pos]).transform("nunique").to_numpy()
        rules.remove(mark(len(k), pos[n_labels > 1]), "conflicting_labels")
    if cfg.clean.drop_leakage:
        train = rules.kept & (split == "train")
        in_train = mark(k.max() + 1 if len(k) else 0, k[train])
        rules.remove((split != "train") & in_train[k], "leakage")


def clean_frame(raw: pd.DataFrame, cfg: DataConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    """Apply every cleaning rule; return (splits, quarantine, report).

    Rules run in order and each sees only the rows earlier rules kept; rows are marked, not
    copied, and the frame is split once at the end (every copy of a million rows costs).
    """
    df = raw.copy()
    df["raw_index"] = np.arange(len(df))
    report: dict = {"rows_in": len(df), "removed": {}, "changed": {}}
    rules = Rules(len(df), report)
    task = cfg.task

    apply_row_rules(df, cfg, rules)
    keys = row_keys(df, task)
    split = assign_splits(df, keys, cfg, rules.kept).to_numpy(dtype=object)
    df["split"] = split
    rules.remove(~np.isin(split, SPLITS), "unknown_split")
    sampled_out = select_sampled_out(keys, rules.kept, cfg)
    if sampled_out.any():
        report["sampled_out"] = int(sampled_out.sum())  # not bad rows: left out by data.max_rows
        rules.kept &= ~sampled_out
    kind = kind_of(task)
    apply_set_rules(keys, label_keys_of(df, task), split, cfg, rules)

    kept = df[rules.kept].drop(columns=["label_raw", PARSE_ERROR, LINE_CONTENT], errors="ignore")
    splits = {name: kept[kept["split"].eq(name)].drop(columns="split").reset_index(drop=True) for name in SPLITS}
    if cfg.clean.augment and kind.augments:
        extra = augment_rows(splits["train"], cfg.clean.augment_copies, cfg.splits.seed)
        report["augmented_rows"] = len(extra)
        splits["train"] = pd.concat([splits["train"], extra], ignore_index=True)

    # `split` of a quarantined row: the split it would have had.
    cols = [c for c in raw.columns if c != "split"] + ["split", "raw_index"]
    removed = pd.notna(rules.reason)
    quarantine = df.loc[removed, cols].assign(reason=rules.reason[removed]).reset_index(drop=True)
    report["rows_out"] = {name: len(frame) for name, frame in splits.items()}
    report["quarantined"] = len(quarantine)
    return splits, quarantine, report


def resolve_labels(splits: dict[str, pd.DataFrame], cfg: DataConfig) -> list[str] | None:
    """The label list in id order: declared, or sorted from the data. None for regression."""
    kind = kind_of(cfg.task)
    if not kind.has_labels:
        return None
    if cfg.labels:
        return list(cfg.labels)
    if kind.is_token_level:
        tags = {t for frame in splits.values() for tags in frame["tags"] for t in tags}
        return tag_set(entity_types(tags))
    if kind.is_multi_label:
        return sorted({name for frame in splits.values() for names in frame["label"] for name in names})
    if not kind.is_single_label:
        raise kind.unsupported("label set")
    return sorted(pd.concat([frame["label"] for frame in splits.values()]).astype(str).unique())


def clean_data(raw_path: str, cfg: DataConfig, run_dir: str | Path) -> CleanResult:
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
    return CleanResult(
        dir=str(out_dir),
        splits=paths,
        quarantine=q_path,
        labels=labels,
        report=report,
        report_path=str(out_dir / "cleaning_report.json"),
        digest=digest_frames(splits),
    )
