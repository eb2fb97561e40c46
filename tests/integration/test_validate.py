"""Data validation with the real Great Expectations suites in expectations/ (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.clean import clean_data
from tasks.data.collect import collect_data
from tasks.data.gx_suite import SCOPES
from tasks.data.validate import DataValidationError, load_suite, validate_data
from tasks.io import write_frames
from tasks.labels import find_bio_break
from tasks.results import CleanResult

TASKS = ("classification", "pair_classification", "regression", "ner")


def data_config(*overrides: str):
    # Tiny frames: the class-size rules are tested on their own below.
    small = ["data.validation.min_rows=5", "data.validation.min_class_rows=2", "data.validation.warn_class_rows=2"]
    return load_config(None, [*small, *overrides]).data


def write_clean(
    run_dir: Path, train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame, labels: list[str] | None
) -> CleanResult:
    """Parquet files shaped like clean_data's output, for cases the clean stage would never produce."""
    frames = {"train": train, "validation": validation, "test": test}
    for df, start in zip(frames.values(), (0, 1000, 2000)):
        df["raw_index"] = range(start, start + len(df))
    folder = run_dir / "data" / "clean"
    paths = write_frames(frames, folder)
    return CleanResult(
        dir=str(folder),
        splits=paths,
        quarantine=str(folder / "quarantine.parquet"),
        labels=labels,
        report={},
        report_path=str(folder / "cleaning_report.json"),
        digest="hand-written",
    )


def texts(n: int, prefix: str) -> list[str]:
    return [f"{prefix} example number {i}" for i in range(n)]


def classification_frames(n_train: int = 20, train_labels=None) -> tuple[pd.DataFrame, ...]:
    labels = train_labels or ["neg", "pos"] * (n_train // 2)
    train = pd.DataFrame({"text": texts(n_train, "train"), "label": labels})
    validation = pd.DataFrame({"text": texts(4, "val"), "label": ["neg", "pos"] * 2})
    test = pd.DataFrame({"text": texts(4, "test"), "label": ["neg", "pos"] * 2})
    return train, validation, test


def failed(result: dict) -> set[tuple[str, str]]:
    return {(r["split"], r["expectation"]) for r in result.critical_failures + result.warnings}


def test_every_suite_loads_into_gx_with_severity_and_scope():
    import great_expectations as gx

    for task in TASKS:
        suite = load_suite(task)
        assert suite["name"] == task
        for exp in suite["expectations"]:
            assert exp["meta"]["severity"] in ("critical", "warning") and exp["meta"]["scope"] in SCOPES
        # GX checks every type name and kwargs when it builds the suite.
        gx.ExpectationSuite(
            name=task, expectations=[{k: e[k] for k in ("type", "kwargs", "meta")} for e in suite["expectations"]]
        )


def test_bio_break_finds_i_tag_without_its_b_tag():
    assert find_bio_break(["B-PER", "I-PER", "O", "B-LOC"]) is None
    assert find_bio_break(["O", "I-PER"]) == "I-PER after O at token 1"
    assert find_bio_break(["B-LOC", "I-PER"]) == "I-PER after B-LOC at token 1"


def test_packaged_classification_passes_and_writes_reports(tmp_path):
    cfg = data_config("data.source.name=sms_spam", "data.max_rows=400", "data.validation.min_rows=50")
    clean = clean_data(collect_data(cfg, tmp_path).path, cfg, tmp_path)
    result = validate_data(clean, cfg, tmp_path)  # returns only when nothing critical failed (else raises)
    assert (result.status, result.warning_count, result.warnings) == ("passed", 0, [])
    profile = result.profile
    assert profile["rows"] == clean.report["rows_out"]
    assert set(profile["labels"]["train"]) == {"ham", "spam"}
    assert set(profile["length_percentiles"]["train"]) == {"p50", "p90", "p99", "max"}
    assert json.loads(Path(result.profile_path).read_text()) == json.loads(json.dumps(profile))
    rows = json.loads(Path(result.summary_path).read_text())
    assert {r["split"] for r in rows} == {"train", "validation", "test", "all_rows", "train_labels"}
    assert all(r["success"] for r in rows)  # every expectation held, warnings included
    assert "| split | expectation |" in Path(result.summary_md).read_text()
    assert (Path(result.data_docs_dir) / "index.html").exists()


def test_packaged_ner_passes(tmp_path):
    cfg = data_config("data.source.name=tweet_ner", "data.task=ner", "data.max_rows=300")
    clean = clean_data(collect_data(cfg, tmp_path).path, cfg, tmp_path)
    result = validate_data(clean, cfg, tmp_path)
    assert (result.status, result.warning_count, result.warnings) == ("passed", 0, [])
    assert result.profile["token_count_percentiles"]["train"]["max"] >= 1
    assert "O" in result.profile["labels"]["train"]


def test_single_class_train_fails_critically_and_still_writes_reports(tmp_path):
    train, validation, test = classification_frames(train_labels=["neg"] * 20)
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config(), tmp_path)
    message = str(err.value)
    assert "expect_column_unique_value_count_to_be_between(label): observed 1 (expected min_value=2)" in message
    assert "label='neg', rows=20" in message
    assert "Full report:" in message.splitlines()[-1]
    result = err.value.result
    assert ("train", "expect_column_unique_value_count_to_be_between(label)") in failed(result)
    folder = tmp_path / "data" / "validation"
    for name in ("summary.json", "summary.md", "profile.json", "data_docs/index.html"):
        assert (folder / name).exists(), name
    assert "**FAIL**" in (folder / "summary.md").read_text()


def test_labels_outside_the_declared_set_fail(tmp_path):
    train, validation, test = classification_frames()
    validation.loc[1, "label"] = "maybe"
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config(), tmp_path)
    assert failed(err.value.result) == {("validation", "expect_column_values_to_be_in_set(label)")}
    assert "raw_index=1001, label='maybe'" in str(err.value)


def test_class_rule_counts_rows_critical_below_10_and_names_each_class_below_30(tmp_path):
    train, validation, test = classification_frames(63, ["neg"] * 40 + ["pos"] * 20 + ["odd"] * 3)
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos", "odd"])
    defaults = ("data.validation.min_class_rows=10", "data.validation.warn_class_rows=30")
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config(*defaults), tmp_path)
    result = err.value.result
    [critical] = result.critical_failures
    assert critical["expectation"] == "expect_column_values_to_be_between(rows)"
    assert [s["label"] for s in critical["samples"]] == ["odd"] and "data.label_map" in critical["hint"]
    [warning] = result.warnings
    assert sorted(s["label"] for s in warning["samples"]) == ["odd", "pos"]  # every class under 30 named
    assert "classes: label='odd' (3 rows)" in str(err.value)
    # 3 rows of 63 is 4.8%: a share rule would have let it through; 20 rows is a warning only.
    train, validation, test = classification_frames(60, ["neg"] * 40 + ["pos"] * 20)
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    result = validate_data(clean, data_config(*defaults), tmp_path)
    assert result.status == "warnings" and [s["label"] for s in result.warnings[0]["samples"]] == ["pos"]


def test_leakage_between_splits_is_detected(tmp_path):
    train, validation, test = classification_frames()
    test.loc[2, "text"] = train.loc[5, "text"]
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config(), tmp_path)
    assert failed(err.value.result) == {("all_rows", "expect_column_values_to_be_in_set(_in_train)")}
    assert f"split='test', raw_index=2002, _in_train=True, text='{train.loc[5, 'text']}'" in str(err.value)


def test_too_few_rows_fail(tmp_path):
    train, validation, test = classification_frames(n_train=10)
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config("data.validation.min_rows=50"), tmp_path)
    assert "expect_table_row_count_to_be_between: observed 10 (expected min_value=50)" in str(err.value)


def test_warnings_pass_unless_fail_on_warning(tmp_path):
    train, validation, test = classification_frames()
    train.loc[3, "text"] = train.loc[2, "text"]
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    result = validate_data(clean, data_config(), tmp_path)
    assert (result.status, result.warning_count) == ("warnings", 1)
    assert failed(result) == {("train", "expect_column_values_to_be_unique(text)")}
    with pytest.raises(DataValidationError, match=r"\[warning\] train: expect_column_values_to_be_unique"):
        validate_data(clean, data_config("data.validation.fail_on_warning=true"), tmp_path)


def test_ner_length_mismatch_bad_tags_and_bio_order_are_caught(tmp_path):
    def sentences(prefix, n):
        return pd.DataFrame(
            {
                "tokens": [[prefix, "visits", f"Paris{i}"] for i in range(n)],
                "tags": [["B-PER", "O", "B-LOC"] for _ in range(n)],
            }
        )

    train, validation, test = sentences("Ann", 8), sentences("Bob", 3), sentences("Cy", 3)
    train.at[1, "tags"] = ["B-PER", "O"]  # one tag short
    train.at[2, "tags"] = ["B-PER", "O", "LOC"]  # not BIO
    validation.at[0, "tags"] = ["O", "O", "I-LOC"]  # I- without B-: a warning
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    clean = write_clean(tmp_path, train, validation, test, labels)
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config("data.task=ner"), tmp_path)
    result = err.value.result
    assert {(r["split"], r["expectation"]) for r in result.critical_failures} == {
        ("train", "expect_column_pair_values_to_be_equal(_n_tokens, _n_tags)"),
        ("all_labels", "expect_column_values_to_match_regex(tag)"),
        ("all_labels", "expect_column_values_to_be_in_set(tag)"),
    }
    assert [(r["split"], r["samples"][0]["_bio_break"]) for r in result.warnings] == [
        ("validation", "I-LOC after O at token 2")
    ]
    message = str(err.value)
    assert "raw_index=1, _n_tokens=3, _n_tags=2" in message and "tag='LOC'" in message


def test_pair_and_regression_suites(tmp_path):
    pair = [
        pd.DataFrame({"text": texts(n, p), "text_pair": texts(n, p + " other"), "label": ["0", "1"] * (n // 2)})
        for n, p in ((20, "train"), (4, "val"), (4, "test"))
    ]
    pair[1].loc[0, "text_pair"] = "   "
    clean = write_clean(tmp_path / "pair", *pair, ["0", "1"])
    cfg = data_config("data.task=pair_classification", "data.text_pair_column=sentence2")
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, cfg, tmp_path / "pair")
    assert failed(err.value.result) == {("validation", "expect_column_values_to_match_regex(text_pair)")}

    reg = [pd.DataFrame({"text": texts(n, p), "label": [0.5] * n}) for n, p in ((20, "train"), (4, "val"), (4, "t"))]
    clean = write_clean(tmp_path / "reg", *reg, None)
    with pytest.raises(DataValidationError) as err:
        validate_data(clean, data_config("data.task=regression"), tmp_path / "reg")
    assert failed(err.value.result) == {("train", "expect_column_unique_value_count_to_be_between(label)")}


def test_the_class_warning_names_every_small_class_not_five(tmp_path):
    small = [f"c{i}" for i in range(8)] + ["neg", "pos"]  # validation and test hold neg and pos
    train_labels = ["big"] * 100 + [c for c in small for _ in range(12)]
    train, validation, test = classification_frames(len(train_labels), train_labels)
    clean = write_clean(tmp_path, train, validation, test, ["big", *small])
    result = validate_data(clean, data_config("data.validation.warn_class_rows=30"), tmp_path)
    [warning] = result.warnings
    assert sorted(s["label"] for s in warning["samples"]) == sorted(small)


def test_long_texts_pass_classification_by_default_and_fail_a_configured_cap(tmp_path):
    train, validation, test = classification_frames()
    test.loc[0, "text"] = "long " * 4_000  # 20,000 characters: a long document, not bad data
    clean = write_clean(tmp_path, train, validation, test, ["neg", "pos"])
    assert validate_data(clean, data_config(), tmp_path).success
    with pytest.raises(DataValidationError, match="expect_column_value_lengths_to_be_between"):
        validate_data(clean, data_config("data.validation.max_chars=10000"), tmp_path)
