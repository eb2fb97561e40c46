"""Each source kind read for real, and bad input that must speak clearly."""

from __future__ import annotations

import hashlib
import sqlite3

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.collect import collect_data
from tasks.data.readers import DataSourceError
from tasks.data.sources import read_source

ROWS = pd.DataFrame(
    {"sentence": ["good film", "bad film", "great plot", "dull plot"], "verdict": ["pos", "neg", "pos", "neg"]}
)


def cfg_for(**source):
    sets = [f"data.source.{k}={v}" for k, v in source.items()] + [
        "data.text_column=sentence",
        "data.label_column=verdict",
    ]
    return load_config(None, sets)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_file_formats(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    {
        "csv": lambda: ROWS.to_csv(path, index=False),
        "tsv": lambda: ROWS.to_csv(path, sep="\t", index=False),
        "jsonl": lambda: ROWS.to_json(path, orient="records", lines=True),
        "parquet": lambda: ROWS.to_parquet(path),
    }[fmt]()
    cfg = cfg_for(kind="file", path=str(path))
    ref = collect_data(cfg.data, tmp_path / "run")
    out = pd.read_parquet(ref.path)
    assert list(out["text"]) == list(ROWS["sentence"]) and list(out["label"]) == list(ROWS["verdict"])
    assert ref.rows == 4 and len(ref.digest) == 16


def test_folder_with_split_files(tmp_path):
    ROWS.iloc[:3].to_csv(tmp_path / "train.csv", index=False)
    ROWS.iloc[3:].to_csv(tmp_path / "test.csv", index=False)
    df = read_source(cfg_for(kind="file", path=str(tmp_path)).data.source)
    assert sorted(df["split"].unique()) == ["test", "train"]


def test_a_lone_file_named_test_is_the_whole_data_not_a_test_split(tmp_path):
    ROWS.to_csv(tmp_path / "test_reviews.csv", index=False)
    df = read_source(cfg_for(kind="file", path=str(tmp_path / "test_reviews.csv")).data.source)
    assert "split" not in df.columns and len(df) == 4  # hashed into train/validation/test later
    (tmp_path / "dev").mkdir()
    ROWS.to_csv(tmp_path / "dev" / "dev.csv", index=False)
    ROWS.to_csv(tmp_path / "dev" / "test.csv", index=False)
    assert "split" not in read_source(cfg_for(kind="file", path=str(tmp_path / "dev")).data.source).columns


def test_saved_datasets_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"train": Dataset.from_pandas(ROWS.iloc[:3]), "validation": Dataset.from_pandas(ROWS.iloc[3:])}
    ).save_to_disk(str(tmp_path / "ds"))
    df = read_source(cfg_for(kind="disk", path=str(tmp_path / "ds")).data.source)
    assert len(df) == 4 and set(df["split"]) == {"train", "validation"}


def test_hub_dataset_through_a_local_copy(tmp_path):
    """The hub path (name, config, revision) read from a local copy laid out like a hub repo."""
    from datasets import ClassLabel, Dataset, Features, Value

    repo = tmp_path / "glue"
    feats = Features(
        {
            "sentence1": Value("string"),
            "sentence2": Value("string"),
            "label": ClassLabel(names=["not_equivalent", "equivalent"]),
        }
    )
    for split in ("train", "validation", "test"):
        Dataset.from_dict(
            {"sentence1": ["a b", "c d"], "sentence2": ["a b!", "x y"], "label": [1, 0]}, features=feats
        ).to_parquet(str(repo / "mrpc" / f"{split}-00000-of-00001.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: mrpc\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: mrpc/{s}-*.parquet\n" for s in ("train", "validation", "test"))
        + "---\n"
    )
    cfg = load_config(
        None,
        [
            "data.source.kind=hub",
            f"data.source.name={repo}",
            "data.source.config=mrpc",
            "data.task=pair_classification",
            "data.text_column=sentence1",
            "data.text_pair_column=sentence2",
        ],
    )
    ref = collect_data(cfg.data, tmp_path / "run")
    out = pd.read_parquet(ref.path)
    assert set(out["split"]) == {"train", "validation", "test"}
    assert set(out["label"]) == {"equivalent", "not_equivalent"}  # class names, not ids
    assert sorted(set(zip(out["text"], out["text_pair"]))) == [("a b", "a b!"), ("c d", "x y")]  # pairs kept together


def test_packaged_datasets():
    for name, task, n in [
        ("rotten_tomatoes", "classification", 12_000),
        ("sms_spam", "classification", 5_574),
        ("sentiment_scores", "regression", 20_000),
        ("tweet_ner", "ner", 2_394),
    ]:
        cfg = load_config(None, [f"data.source.name={name}", f"data.task={task}"])
        df = read_source(cfg.data.source)
        assert len(df) >= n, name
    spam = read_source(load_config(None, ["data.source.name=sms_spam"]).data.source)
    assert (spam["label"] == "spam").sum() == 747  # the recovered collection, not the damaged 638


def test_packaged_trec_questions_coarse_and_fine():
    coarse = read_source(load_config(None, ["data.source.name=trec_coarse"]).data.source)
    fine = read_source(load_config(None, ["data.source.name=trec_fine"]).data.source)
    assert len(coarse) == len(fine) == 15_452 and coarse["text"].nunique() == 5_381
    assert sorted(coarse["label"].unique()) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert fine["label"].nunique() == 50 and (fine["label"].str.split(":").str[0] == coarse["label"]).all()
    assert coarse["text"].iloc[0] == "How did serfdom develop in and then leave Russia ?"


def test_sql_source_on_sqlite(tmp_path):
    db = tmp_path / "d.db"
    with sqlite3.connect(db) as conn:
        ROWS.to_sql("reviews", conn, index=False)
    cfg = cfg_for(kind="sql", connection=f"sqlite:///{db}", query="SELECT sentence, verdict FROM reviews")
    assert len(collect_data(cfg.data, tmp_path / "run").columns) == 2


def test_unreachable_sql_is_a_clear_error(tmp_path):
    cfg = cfg_for(kind="sql", connection="postgresql+psycopg2://u@127.0.0.1:1/none", query="SELECT 1")
    with pytest.raises(DataSourceError, match="reachable|psycopg2|connection"):
        read_source(cfg.data.source)


def test_conll_file(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("John\tB-person\nlives\tO\n\nParis\tB-geo-loc\nrocks\tO\n")
    cfg = load_config(None, ["data.task=ner", "data.source.kind=conll", f"data.source.path={f}"])
    df = read_source(cfg.data.source)
    assert df["tokens"].tolist() == [["John", "lives"], ["Paris", "rocks"]] and set(df["split"]) == {"train"}


def test_missing_file(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist.*data.source.path"):
        collect_data(cfg_for(kind="file", path=str(tmp_path / "nope.csv")).data, tmp_path)


def test_wrong_column_lists_what_exists(tmp_path):
    ROWS.to_csv(tmp_path / "d.csv", index=False)
    cfg = load_config(None, ["data.source.kind=file", f"data.source.path={tmp_path / 'd.csv'}"])
    with pytest.raises(DataSourceError) as e:
        collect_data(cfg.data, tmp_path / "run")
    assert "['text', 'label']" in str(e.value) and "sentence" in str(e.value) and "verdict" in str(e.value)


def test_empty_dataset(tmp_path):
    (tmp_path / "d.csv").write_text("sentence,verdict\n")
    with pytest.raises(DataSourceError, match="no rows"):
        collect_data(cfg_for(kind="file", path=str(tmp_path / "d.csv")).data, tmp_path / "run")


def test_undecodable_bytes(tmp_path):
    (tmp_path / "d.csv").write_bytes("sentence,verdict\ncaf\xe9 ok,pos\n".encode("latin-1"))
    with pytest.raises(DataSourceError, match="UTF-8"):
        collect_data(cfg_for(kind="file", path=str(tmp_path / "d.csv")).data, tmp_path / "run")


def test_ragged_csv_refused_with_its_line_when_asked(tmp_path):
    (tmp_path / "d.csv").write_text("sentence,verdict\ngood,pos\nbad,neg,extra,fields\n")
    cfg = cfg_for(kind="file", path=str(tmp_path / "d.csv"), on_bad_lines="error")
    with pytest.raises(DataSourceError, match=r"d.csv:3: 4 fields, the header has 2.*on_bad_lines=quarantine"):
        collect_data(cfg.data, tmp_path / "run")
    assert (tmp_path / "d.csv").read_text().count("\n") == 3  # the raw input is untouched


def test_ten_megabyte_single_line_is_read_then_quarantined_as_too_long(tmp_path):
    from tasks.data.clean import clean_data

    csv = tmp_path / "d.csv"
    rows = pd.DataFrame({"sentence": [f"short review {i}" for i in range(200)], "verdict": ["pos", "neg"] * 100})
    rows.loc[57, "sentence"] = "word " * 2_000_000  # one 10 MB line, no newline inside
    rows.to_csv(csv, index=False)
    before = hashlib.sha256(csv.read_bytes()).hexdigest()
    cfg = cfg_for(kind="file", path=str(csv))
    cfg.data.clean.max_chars = 10_000  # classification has no cap by default; a user sets one like this
    raw = collect_data(cfg.data, tmp_path / "run")
    assert raw.rows == 200
    ref = clean_data(raw.path, cfg.data, tmp_path / "run")
    q = pd.read_parquet(ref.quarantine)
    assert q[["raw_index", "reason"]].values.tolist() == [[57, "too_long"]]
    assert ref.report["removed"]["too_long"] == 1 and sum(ref.report["rows_out"].values()) == 199
    assert hashlib.sha256(csv.read_bytes()).hexdigest() == before  # the raw input is untouched
