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
from tasks.results import CleanResult


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
