"""Typed stage results: they survive Prefect's serializer and the train spec's JSON, and move with a run folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import load_config
from tasks.data.cache import adopt_result, paths_in
from tasks.data.clean import clean_data
from tasks.data.collect import collect_data
from tasks.results import CleanResult, CollectResult, RegisteredVersion, ValidationResult


def cleaned(run_dir: Path) -> CleanResult:
    raw = pd.DataFrame({"text": [f"an honest review number {i}" for i in range(300)], "label": ["pos", "neg"] * 150})
    run_dir.mkdir(parents=True)
    raw.to_parquet(run_dir / "raw.parquet")
    return clean_data(str(run_dir / "raw.parquet"), load_config(None, []).data, run_dir)


def test_a_clean_result_round_trips_through_prefects_pickle_serializer_and_the_train_spec(tmp_path):
    from prefect.serializers import PickleSerializer

    ref = cleaned(tmp_path / "run")
    assert (
        isinstance(ref, CleanResult)
        and ref.labels == ["neg", "pos"]
        and set(ref.splits) == {"train", "validation", "test"}
    )
    serializer = PickleSerializer()  # what persist_result=True writes for the cached data stages
    assert serializer.loads(serializer.dumps(ref)) == ref
    # train_spec.json carries it to torchrun's workers as JSON, and back.
    assert CleanResult(**json.loads(json.dumps(dataclasses.asdict(ref)))) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.digest = "another"


def test_a_reused_clean_result_points_at_its_own_copies_in_the_new_run_folder(tmp_path):
    first, second, third = tmp_path / "run-1", tmp_path / "run-2", tmp_path / "run-3"
    ref = cleaned(first)
    moved = adopt_result(ref, "clean", first, second)
    assert isinstance(moved, CleanResult)
    assert paths_in(moved, str(first)) == [] and len(paths_in(moved, str(second))) == 6  # dir, 3 splits, 2 files
    assert moved.splits["train"] == str(second / "data" / "clean" / "train.parquet")
    for name, path in moved.splits.items():
        assert Path(path).read_bytes() == Path(ref.splits[name]).read_bytes()
    assert (moved.digest, moved.labels, moved.report) == (ref.digest, ref.labels, ref.report)
    assert ref.splits["train"].startswith(str(first))  # the cached original is left as it was

    shutil.rmtree(first / "data")
    assert adopt_result(ref, "clean", first, third) is None  # its files are gone: the stage must run again


def collected(run_dir: Path, source: Path) -> CollectResult:
    pd.DataFrame({"text": ["a good film", "a dull film"], "label": ["pos", "neg"]}).to_csv(source, index=False)
    return collect_data(load_config(None, ["data.source.kind=file", f"data.source.path={source}"]).data, run_dir)


def test_a_collect_result_round_trips_and_a_reused_one_points_at_its_own_snapshot(tmp_path):
    from prefect.serializers import PickleSerializer

    first, second = tmp_path / "run-1", tmp_path / "run-2"
    ref = collected(first, tmp_path / "reviews.csv")
    assert isinstance(ref, CollectResult) and (ref.rows, ref.unparseable_lines) == (2, 0)
    assert [Path(f["file"]).name for f in ref.files] == ["reviews.csv"]
    serializer = PickleSerializer()
    assert serializer.loads(serializer.dumps(ref)) == ref
    assert CollectResult(**json.loads(json.dumps(dataclasses.asdict(ref)))) == ref  # bench/data.py's refs

    moved = adopt_result(ref, "collect", first, second)
    assert isinstance(moved, CollectResult) and moved.path == str(second / "data" / "raw" / "all.parquet")
    assert Path(moved.path).read_bytes() == Path(ref.path).read_bytes()
    # The source and its files lie outside the run folder: named as they were.
    assert (moved.digest, moved.source, moved.files) == (ref.digest, ref.source, ref.files)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.rows = 3


def validated(run_dir: Path, warnings: list[dict]) -> ValidationResult:
    folder = run_dir / "data" / "validation"
    (folder / "data_docs").mkdir(parents=True)
    for name in ("summary.json", "summary.md", "profile.json", "data_docs/index.html"):
        (folder / name).write_text("{}")
    return ValidationResult(
        success=True,
        status="warnings" if warnings else "passed",
        warning_count=len(warnings),
        critical_failures=[],
        warnings=warnings,
        summary_path=str(folder / "summary.json"),
        summary_md=str(folder / "summary.md"),
        data_docs_dir=str(folder / "data_docs"),
        data_docs_index=str(folder / "data_docs" / "index.html"),
        profile={"rows": {"train": 10}},
        profile_path=str(folder / "profile.json"),
    )


def test_a_reused_validation_result_points_at_its_own_reports_and_still_tags_the_version(tmp_path):
    from prefect.serializers import PickleSerializer

    from tasks.registry.register import DATA_VALIDATION_TAG, DATA_WARNINGS_TAG, validation_tags

    first, second = tmp_path / "run-1", tmp_path / "run-2"
    warning = {"split": "train", "expectation": "expect_column_values_to_be_unique(text)", "severity": "warning"}
    ref = validated(first, [warning])
    serializer = PickleSerializer()
    assert serializer.loads(serializer.dumps(ref)) == ref
    moved = adopt_result(ref, "validate", first, second)
    assert isinstance(moved, ValidationResult)
    assert paths_in(moved, str(first)) == [] and len(paths_in(moved, str(second))) == 5
    assert (moved.warnings, moved.profile, moved.status) == (ref.warnings, ref.profile, "warnings")
    assert validation_tags(moved) == {DATA_VALIDATION_TAG: "warnings", DATA_WARNINGS_TAG: "1"}
    assert validation_tags(validated(tmp_path / "run-3", [])) == {DATA_VALIDATION_TAG: "passed"}
    assert validation_tags(None) == {}


def test_a_validation_error_carries_the_stages_result():
    from tasks.data.validate import DataValidationError

    ref = ValidationResult(False, "passed", 0, [{"split": "train"}], [], "s.json", "s.md", "docs", "i.html", {}, "p")
    err = DataValidationError("data validation failed", ref)
    assert err.result is ref and isinstance(err, ValueError) and str(err) == "data validation failed"


def test_a_registered_version_is_a_plain_dict_in_the_flows_output():
    reg = RegisteredVersion("m", "3", "challenger", "runs:/r/model", "models:/m/3")
    assert dataclasses.asdict(reg) == {
        "name": "m",
        "version": "3",
        "alias": "challenger",
        "source": "runs:/r/model",
        "model_uri": "models:/m/3",
    }
