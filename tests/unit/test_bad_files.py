"""The bad-file matrix: files as users have them, each case read for real and its outcome asserted.

Each row of the README's table is one test here: what the file holds, and what the pipeline does
(reads it, quarantines the bad lines with their line number, or refuses with one clear error).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.clean import LabelSpellingError, clean_frame
from tasks.data.collect import collect_data
from tasks.data.readers import DataSourceError
from tasks.data.sources import read_source

REVIEWS = [(f"review number {i} of the film", "pos" if i % 2 else "neg") for i in range(30)]


def config(path: Path, *overrides: str):
    return load_config(None, ["data.source.kind=file", f"data.source.path={path}", *overrides])


def collect_and_clean(path: Path, tmp_path: Path, *overrides: str):
    """(collect ref, splits, quarantine, cleaning report) of one file."""
    cfg = config(path, *overrides)
    raw = collect_data(cfg.data, tmp_path / "run")
    splits, quarantine, report = clean_frame(pd.read_parquet(raw.path), cfg.data)
    return raw, splits, quarantine, report


def kept(splits: dict) -> pd.DataFrame:
    return pd.concat(splits.values(), ignore_index=True)


def csv_text(rows=REVIEWS, sep=",") -> str:
    return f"text{sep}label\n" + "".join(f"{t}{sep}{lab}\n" for t, lab in rows)


def jsonl_text(rows=REVIEWS) -> str:
    return "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows)


# --- byte-order marks and encodings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text", [("d.csv", csv_text()), ("d.tsv", csv_text(sep="\t")), ("d.jsonl", jsonl_text())]
)
def test_utf8_bom_is_accepted_in_every_text_format(tmp_path, name, text):
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    raw, splits, _, _ = collect_and_clean(tmp_path / name, tmp_path)
    assert raw.rows == 30 and raw.files[0]["encoding"] == "utf-8-sig"
    assert not kept(splits)["text"].str.contains("\ufeff").any()


def test_utf8_bom_in_conll(tmp_path):
    (tmp_path / "d.conll").write_bytes(b"\xef\xbb\xbfJohn\tB-PER\nlives\tO\n\nParis\tB-LOC\n")
    df = read_source(
        load_config(None, ["data.source.kind=conll", f"data.source.path={tmp_path / 'd.conll'}"]).data.source
    )
    assert df["tokens"].tolist() == [["John", "lives"], ["Paris"]]


def test_utf16_with_bom_as_excel_saves_unicode_text(tmp_path):
    (tmp_path / "d.tsv").write_bytes(csv_text(sep="\t").encode("utf-16"))
    raw, _, _, _ = collect_and_clean(tmp_path / "d.tsv", tmp_path)
    assert raw.rows == 30 and raw.files[0]["encoding"] == "utf-16"


WINDOWS_ROWS = [
    (f"The café’s crème brûlée was “perfect” – we’ll be back {i}", "pos" if i % 2 else "neg") for i in range(30)
]


def test_windows_1252_is_refused_with_its_line_and_the_encoding_fix(tmp_path):
    (tmp_path / "d.csv").write_bytes(csv_text([("plain", "neg"), *WINDOWS_ROWS]).encode("cp1252"))
    with pytest.raises(DataSourceError) as e:
        collect_and_clean(tmp_path / "d.csv", tmp_path)
    assert "d.csv:3: byte e9" in str(e.value)  # line 3: the header and one plain row come first
    assert "it looks like cp1252" in str(e.value)
    assert "data.source.encoding" in str(e.value) and "auto" in str(e.value)


@pytest.mark.parametrize("encoding", ["cp1252", "auto"])
def test_windows_1252_reads_with_its_encoding_or_auto(tmp_path, encoding):
    (tmp_path / "d.csv").write_bytes(csv_text(WINDOWS_ROWS).encode("cp1252"))
    raw, splits, _, _ = collect_and_clean(tmp_path / "d.csv", tmp_path, f"data.source.encoding={encoding}")
    assert "The café’s crème brûlée was “perfect” – we’ll be back 7" in set(kept(splits)["text"])
    assert raw.files[0]["encoding"] == "cp1252"  # auto reports what it chose


def test_unknown_encoding_name_is_one_clear_error(tmp_path):
    (tmp_path / "d.csv").write_text(csv_text())
    with pytest.raises(DataSourceError, match="'klingon' is not an encoding"):
        collect_and_clean(tmp_path / "d.csv", tmp_path, "data.source.encoding=klingon")


def test_gzipped_csv_with_bom_and_crlf_line_ends(tmp_path):
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(b"\xef\xbb\xbf" + csv_text().replace("\n", "\r\n").encode()))
    raw, splits, _, _ = collect_and_clean(tmp_path / "d.csv.gz", tmp_path)
    assert raw.rows == 30 and set(kept(splits)["label"]) == {"pos", "neg"}


# --- lines that cannot be parsed ------------------------------------------------------------------


def test_jsonl_broken_line_is_quarantined_with_its_line_number(tmp_path):
    lines = jsonl_text().splitlines()
    lines[2] = '{"text": "cut off mid-wri'
    lines[5] = '["an", "array"]'
    lines.insert(7, "")  # blank lines are not data, and not errors
    lines[9] = json.dumps({"text": "a line\u2028separator inside", "label": "pos"}, ensure_ascii=False)
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    raw, splits, quarantine, report = collect_and_clean(tmp_path / "d.jsonl", tmp_path)
    assert raw.unparseable_lines == 2 and raw.files[0]["rows"] == 28
    assert report["removed"]["unparseable_line"] == 2 and len(kept(splits)) == 28
    bad = quarantine[quarantine["reason"].eq("unparseable_line")]
    assert bad["parse_error"].str.extract(r"^(d\.jsonl:\d+):")[0].tolist() == ["d.jsonl:3", "d.jsonl:6"]
    assert "invalid JSON" in bad["parse_error"].iloc[0] and "not an object" in bad["parse_error"].iloc[1]
    assert bad["line_content"].iloc[0] == '{"text": "cut off mid-wri'


def test_jsonl_broken_line_refuses_the_file_when_asked(tmp_path):
    lines = jsonl_text().splitlines()
    lines[2] = "{oops"
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    with pytest.raises(DataSourceError, match=r"1 line\(s\) cannot be parsed \(d.jsonl:3: invalid JSON"):
        collect_and_clean(tmp_path / "d.jsonl", tmp_path, "data.source.on_bad_lines=error")


def test_csv_rows_with_the_wrong_field_count_are_quarantined(tmp_path):
    text = csv_text().splitlines()
    text[3] = "too,many,fields"
    text[6] = "too few"
    text.insert(8, '"a quoted, comma",pos')  # quoting is not a wrong field count
    (tmp_path / "d.csv").write_text("\n".join(text) + "\n")
    _, splits, quarantine, report = collect_and_clean(tmp_path / "d.csv", tmp_path)
    assert report["removed"]["unparseable_line"] == 2 and "a quoted, comma" in set(kept(splits)["text"])
    assert sorted(quarantine.loc[quarantine["reason"].eq("unparseable_line"), "parse_error"]) == [
        "d.csv:4: 3 fields, the header has 2",
        "d.csv:7: 1 fields, the header has 2",
    ]


def test_hidden_files_and_folders_are_not_data(tmp_path):
    (tmp_path / "data" / ".ipynb_checkpoints").mkdir(parents=True)
    (tmp_path / "data" / "reviews.csv").write_text(csv_text())
    (tmp_path / "data" / ".ipynb_checkpoints" / "reviews-checkpoint.csv").write_text(csv_text())
    (tmp_path / "data" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    raw, _, _, _ = collect_and_clean(tmp_path / "data", tmp_path)
    assert raw.rows == 30 and [Path(f["file"]).name for f in raw.files] == ["reviews.csv"]


# --- labels ---------------------------------------------------------------------------------------


def test_labels_with_surrounding_whitespace_are_one_class_and_counted(tmp_path):
    rows = [(t, lab + " " if i % 3 == 0 else lab) for i, (t, lab) in enumerate(REVIEWS)]
    (tmp_path / "d.csv").write_text(csv_text(rows).replace(",neg\n", ",\tneg\n", 2))
    _, splits, _, report = collect_and_clean(tmp_path / "d.csv", tmp_path)
    assert set(kept(splits)["label"]) == {"pos", "neg"} and report["changed"]["label_whitespace_stripped"] == 12


def test_labels_differing_only_by_case_are_refused_listing_the_spellings(tmp_path):
    rows = [(t, "Positive" if i in (1, 3) else "positive" if i % 2 else "negative") for i, (t, _) in enumerate(REVIEWS)]
    (tmp_path / "d.csv").write_text(csv_text(rows))
    with pytest.raises(LabelSpellingError) as e:
        collect_and_clean(tmp_path / "d.csv", tmp_path)
    assert "'positive' (13 rows), 'Positive' (2 rows)" in str(e.value) and "data.label_map" in str(e.value)
    assert "negative" not in str(e.value)  # only the clashing spellings are listed


@pytest.mark.parametrize("fix", ["data.label_map={Positive: positive}", "data.labels=[negative, positive]"])
def test_case_variants_map_when_the_config_says_how(tmp_path, fix):
    rows = [(t, "Positive" if i in (1, 3) else "positive" if i % 2 else "negative") for i, (t, _) in enumerate(REVIEWS)]
    (tmp_path / "d.csv").write_text(csv_text(rows))
    _, splits, _, report = collect_and_clean(tmp_path / "d.csv", tmp_path, fix)
    assert kept(splits)["label"].value_counts().to_dict() == {"positive": 15, "negative": 15}
    assert report["changed"].get("label_mapped", 0) + report["changed"].get("label_case_folded", 0) == 2


def test_case_variants_both_declared_stay_two_classes(tmp_path):
    rows = [(t, "A" if i % 2 else "a") for i, (t, _) in enumerate(REVIEWS)]
    (tmp_path / "d.csv").write_text(csv_text(rows))
    _, splits, _, _ = collect_and_clean(tmp_path / "d.csv", tmp_path, "data.labels=[a, A]")
    assert kept(splits)["label"].value_counts().to_dict() == {"A": 15, "a": 15}


def test_integer_labels_read_as_floats_stay_integers(tmp_path):
    rows = [json.dumps({"text": t, "label": i % 2}) for i, (t, _) in enumerate(REVIEWS)]
    rows[4] = json.dumps({"text": "no label here"})  # one missing label: pandas reads the rest as 0.0 / 1.0
    (tmp_path / "d.jsonl").write_text("\n".join(rows))
    _, splits, quarantine, _ = collect_and_clean(tmp_path / "d.jsonl", tmp_path)
    assert set(kept(splits)["label"]) == {"0", "1"}
    assert quarantine.loc[quarantine["reason"].eq("missing_label"), "text"].tolist() == ["no label here"]


def test_numbers_spelled_differently_are_one_class(tmp_path):
    rows = [(t, ["1", "1.0", " 1", "0", "0.0"][i % 5]) for i, (t, _) in enumerate(REVIEWS)]
    (tmp_path / "d.csv").write_text(csv_text(rows))
    _, splits, _, _ = collect_and_clean(tmp_path / "d.csv", tmp_path)
    assert kept(splits)["label"].value_counts().to_dict() == {"1": 18, "0": 12}


# --- the model ------------------------------------------------------------------------------------


def test_a_model_folder_that_does_not_exist_is_refused_before_reading_data(tmp_path):
    from tasks.modelling.encode import ModelSourceError, check_model_source

    with pytest.raises(ModelSourceError, match="does not exist"):
        check_model_source(str(tmp_path / "no-such-model"))
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        check_model_source(str(tmp_path / "empty-model"))
    assert Path(check_model_source("minilm"), "config.json").is_file()
