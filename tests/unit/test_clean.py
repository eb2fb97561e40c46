"""Cleaning rules: each removal quarantined with its reason, splits stable as data grows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.clean import EmptyDatasetError, assign_splits, clean_data, clean_frame, row_keys


def frame(texts, labels, split=None):
    df = pd.DataFrame({"text": texts, "label": labels})
    if split is not None:
        df["split"] = split
    return df


def test_normalises_and_quarantines_with_reasons():
    cfg = load_config(
        None,
        [
            "data.labels=[neg, pos]",
            "data.clean.max_chars=40",
            "data.splits.test_fraction=0",
            "data.splits.validation_fraction=0",
        ],
    )
    raw = frame(
        ["Ｇood\u0007  film\n", "   ", "bad film", "bad film", "same", "same", "wat", None, "x" * 41],
        ["pos", "pos", "neg", "neg", "pos", "neg", "meh", "pos", "pos"],
    )
    splits, q, report = clean_frame(raw, cfg.data)
    assert splits["train"]["text"].tolist() == ["Good film", "bad film"]
    reasons = q.groupby("reason")["raw_index"].apply(sorted).to_dict()
    assert reasons == {
        "empty_text": [1, 7],
        "too_long": [8],
        "unknown_label": [6],
        "duplicate": [3],
        "conflicting_labels": [4, 5],
    }
    assert report["quarantined"] == len(q) == 7 and report["removed"]["duplicate"] == 1


def test_split_assignment_is_stable_as_data_grows():
    cfg = load_config(None, [])
    small = frame([f"text {i}" for i in range(500)], ["a"] * 500)
    grown = frame([f"text {i}" for i in range(2000)], ["a"] * 2000)
    s1 = assign_splits(small, row_keys(small, "classification"), cfg.data)
    s2 = assign_splits(grown, row_keys(grown, "classification"), cfg.data)
    assert (s1.values == s2.values[:500]).all()
    shares = s2.value_counts(normalize=True)
    assert 0.07 < shares["test"] < 0.13 and 0.07 < shares["validation"] < 0.13


def test_leakage_from_source_splits_is_quarantined():
    cfg = load_config(None, [])
    raw = frame(
        ["a b", "c d", "a  b", "e f", "g h"],
        ["x", "y", "x", "y", "x"],
        ["train", "train", "test", "validation", "test"],
    )
    splits, q, _ = clean_frame(raw, cfg.data)
    assert q.set_index("raw_index").loc[2, "reason"] == "leakage"
    assert splits["test"]["text"].tolist() == ["g h"]


def test_source_with_only_train_gets_validation_and_test_carved():
    cfg = load_config(None, [])
    raw = frame([f"t{i}" for i in range(300)], ["x", "y"] * 150, ["train"] * 300)
    splits, _, _ = clean_frame(raw, cfg.data)
    assert all(len(splits[s]) > 10 for s in ("train", "validation", "test"))


def test_ner_rules():
    cfg = load_config(None, ["data.task=ner"])
    raw = pd.DataFrame({"tokens": [["a", "b"], ["c"], ["d", "e"]], "tags": [["B-x", "O"], ["O", "O"], ["O", "Q"]]})
    _, q, _ = clean_frame(raw, cfg.data)
    assert q.set_index("raw_index")["reason"].to_dict() == {1: "tokens_tags_length_mismatch", 2: "invalid_bio_tag"}


def test_augmentation_adds_counted_rows():
    cfg = load_config(
        None, ["data.clean.augment=true", "data.splits.test_fraction=0", "data.splits.validation_fraction=0"]
    )
    raw = frame([f"one two three four five {i}" for i in range(10)], ["a", "b"] * 5)
    splits, _, report = clean_frame(raw, cfg.data)
    assert report["augmented_rows"] == 10 and len(splits["train"]) == 20


def test_empty_after_cleaning_keeps_quarantine(tmp_path):
    cfg = load_config(None, [])
    raw = frame(["", "  ", None], ["a", "b", "a"])
    raw.to_parquet(tmp_path / "raw.parquet")
    with pytest.raises(EmptyDatasetError, match="no training rows.*empty_text"):
        clean_data(str(tmp_path / "raw.parquet"), cfg.data, tmp_path)
    q = pd.read_parquet(tmp_path / "data" / "clean" / "quarantine.parquet")
    assert len(q) == 3 and set(q["reason"]) == {"empty_text"}


def test_ten_megabyte_single_line_is_quarantined_under_a_configured_cap(tmp_path):
    cfg = load_config(None, ["data.clean.max_chars=10000"])
    raw = frame(["y" * 10_000_000] + [f"fine text {i}" for i in range(200)], ["a"] + ["a", "b"] * 100)
    splits, q, _ = clean_frame(raw, cfg.data)
    assert q["reason"].tolist() == ["too_long"] and sum(len(s) for s in splits.values()) == 200


@pytest.mark.parametrize(
    "task,quarantined", [("classification", []), ("regression", []), ("pair_classification", ["too_long"])]
)
def test_long_texts_are_kept_by_default_for_classification_and_regression(task, quarantined):
    # Long documents are the test set the user gave: the model truncates or chunks them (model.long_text).
    sets = [f"data.task={task}"] + (["data.text_pair_column=text_pair"] if task == "pair_classification" else [])
    cfg = load_config(None, sets)
    n = 60
    raw = frame(
        ["long " * 4_000] + [f"fine text {i}" for i in range(n - 1)],
        ([0.5, 2.0] if task == "regression" else ["a", "b"]) * (n // 2),
    )
    if task == "pair_classification":
        raw["text_pair"] = [f"second {i}" for i in range(n)]
    splits, q, _ = clean_frame(raw, cfg.data)
    assert q["reason"].tolist() == quarantined
    assert sum(len(s) for s in splits.values()) == n - len(quarantined)


def test_normalisation_composes_and_collapses_every_unicode_space():
    from tasks.data.clean import normalize_text

    cfg = load_config(None, [])
    raw = pd.Series(
        ["cliche\u0301", "Ｆｕｌｌ\u3000width", "a\u2028b\u00a0c\u2029\td", " \ufeffx\u200by\x1b ", "ﬁne", None]
    )
    assert normalize_text(raw, cfg.data).tolist() == ["cliché", "Full width", "a b c d", "xy", "fine", pd.NA]


def test_labels_outside_the_declared_set_are_quarantined_and_counted(tmp_path):
    cfg = load_config(None, ["data.labels=[neg, pos]"])
    raw = frame([f"review {i}" for i in range(300)], ["pos", "neg", "meh"] * 100)
    raw.to_parquet(tmp_path / "raw.parquet")
    ref = clean_data(str(tmp_path / "raw.parquet"), cfg.data, tmp_path)
    report = json.loads((tmp_path / "data" / "clean" / "cleaning_report.json").read_text())
    assert report["removed"]["unknown_label"] == 100 == ref.report["removed"]["unknown_label"]
    q = pd.read_parquet(ref.quarantine)
    assert set(q["reason"]) == {"unknown_label"} and set(q["label"]) == {"meh"} and len(q) == 100
    assert ref.labels == ["neg", "pos"]


def test_unlabelled_source_split_is_carved_from_train():
    # GLUE's test split has no labels: its rows are quarantined and a test split comes from train.
    cfg = load_config(None, [])
    raw = frame(
        [f"t{i}" for i in range(340)],
        ["x", "y"] * 150 + ["x", "y"] * 10 + [None] * 20,
        ["train"] * 300 + ["validation"] * 20 + ["test"] * 20,
    )
    splits, q, _ = clean_frame(raw, cfg.data)
    assert set(q.loc[q["split"].eq("test"), "reason"]) == {"missing_label"} and len(q) == 20
    assert len(splits["validation"]) == 20 and len(splits["test"]) > 10
    assert set(splits["test"]["text"]) <= {f"t{i}" for i in range(300)}


def test_unreadable_regression_targets_are_quarantined_as_read(tmp_path):
    from tasks.data.collect import collect_data

    pd.DataFrame({"text": ["fine", "awful", "so-so", "meh"], "label": ["3.5", "n/a", "3,5", None]}).to_csv(
        tmp_path / "scores.csv", index=False
    )
    cfg = load_config(
        None,
        [
            "data.task=regression",
            "data.source.kind=file",
            f"data.source.path={tmp_path}/scores.csv",
            "data.splits.test_fraction=0",
            "data.splits.validation_fraction=0",
        ],
    )
    raw = pd.read_parquet(collect_data(cfg.data, tmp_path / "run").path)
    assert raw["label_raw"].tolist()[1:3] == ["n/a", "3,5"]  # the raw snapshot keeps what the file said
    splits, q, _ = clean_frame(raw, cfg.data)
    assert splits["train"]["label"].tolist() == [3.5] and "label_raw" not in splits["train"].columns
    assert dict(zip(q["label_raw"].fillna("-"), q["reason"])) == {
        "n/a": "invalid_label",
        "3,5": "invalid_label",
        "-": "missing_label",
    }


def test_number_labels_are_one_class_whatever_their_spelling():
    from tasks.labels import labels_as_strings

    out = labels_as_strings(pd.Series([0.0, 1.0, None]), declared=["0", "1"])
    assert out.tolist()[:2] == ["0", "1"] and pd.isna(out.iloc[2])
    # A declared spelling is kept as written, so a config that lists "0.0" keeps its labels.
    assert labels_as_strings(pd.Series([0.0, 1.0]), declared=["0.0", "1.0"]).tolist() == ["0.0", "1.0"]
    # Undeclared: 1, 1.0 and "1.0" are one class "1" (a JSONL with one missing label reads floats).
    assert labels_as_strings(pd.Series([0.0, 1.0])).tolist() == ["0", "1"]
    assert labels_as_strings(pd.Series(["1", "1.0", " 2 "])).tolist() == ["1", "1", "2"]
    assert labels_as_strings(pd.Series([0.5, 1.0]), declared=["0", "1"]).tolist() == ["0.5", "1"]
    assert labels_as_strings(pd.Series(["pos", "1"])).tolist() == ["pos", "1"]  # words stay words
