"""Batch scoring for real: the small trained model of `flow_result` in the MLflow registry, local Dask
clusters of worker processes (2 workers, 1 thread each), ONNX Runtime on the workers, the scoring run
in MLflow; answers checked row by row against OnnxPredictor and the metric against the export gate's.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_model_references_parse():
    from tasks.score import ScoreInputError, parse_model_ref

    assert parse_model_ref("m") == ("m", "champion", None)
    assert parse_model_ref("team/m@challenger") == ("team/m", "challenger", None)
    assert parse_model_ref("team/m/12") == ("team/m", None, "12")
    with pytest.raises(ScoreInputError, match="NAME@ALIAS"):
        parse_model_ref("m@")


def test_shards_are_whole_batches_of_length_sorted_rows():
    import numpy as np

    from tasks.score import plan_shards

    lengths = np.array([9, 3, 5, 3, 7, 1, 9, 2])
    shards = plan_shards(lengths, batch_size=2, shard_rows=5)  # 5 rows round down to 2 batches
    assert [list(s) for s in shards] == [[5, 7, 1, 3], [2, 4, 0, 6]]  # stable: ties keep input order


@pytest.fixture(scope="module")
def model(flow_result):
    res = flow_result["result"]
    run_dir = Path(res["run_dir"])
    return {
        "ref": f"{res['registered']['name']}@challenger",
        "name": res["registered"]["name"],
        "version": res["registered"]["version"],
        "test": run_dir / "data" / "clean" / "test.parquet",
        "bundle": run_dir / "onnx",
        "report": json.loads((run_dir / "onnx" / "export_report.json").read_text()),
    }


@pytest.fixture(scope="module")
def scored(model, tmp_path_factory):
    """The labelled test split scored by the flow on a local cluster of 2 single-threaded workers."""
    from flows.score import score

    out = tmp_path_factory.mktemp("score") / "scored.parquet"
    # 64-row shards: the 72-row split becomes 2 shards, so both workers answer.
    result = score(model=model["ref"], input=str(model["test"]), output=str(out), workers=2, shard_rows=64)
    return {"result": result, "out": out}


def test_output_keeps_input_columns_and_equals_the_predictor_row_by_row(model, scored):
    from tasks.inference.predictor import OnnxPredictor

    test = pd.read_parquet(model["test"])
    out = pd.read_parquet(scored["out"])
    assert list(out.columns) == [
        *list(test.columns),
        "prediction",
        "confidence",
        "probabilities",
        "truncated",
        "model_version",
    ]
    pd.testing.assert_frame_equal(out[test.columns], test)
    expected = OnnxPredictor(model["bundle"]).predict(list(test["text"]))
    assert list(out["prediction"]) == [a["label"] for a in expected]
    assert out["confidence"].tolist() == pytest.approx([a["score"] for a in expected], abs=1e-6)
    for got, want in zip(out["probabilities"], expected):
        assert got == pytest.approx(want["scores"], abs=1e-6)
    assert set(out["model_version"]) == {model["version"]}
    assert scored["result"]["rows"] == len(test)


def test_labelled_input_scores_exactly_the_export_gates_metric(model, scored):
    report = model["report"]
    serving = "int8" if report["serving_file"] == "model.int8.onnx" else "fp32"
    gate = report["onnx_test_metrics"][serving]
    got = scored["result"]["metrics"]
    assert got["f1"] == gate["f1"] and got["accuracy"] == gate["accuracy"]


def test_service_answers_each_row_as_batch_scoring_does(model, scored):
    """The service, asked in requests of 7 texts, gives each test row the label and probabilities
    (to 1e-6) that batch scoring gave it in its length-sorted batches on the workers."""
    import httpx

    from deploy.service import create_app
    from tests.support import running

    test = pd.read_parquet(model["test"])
    out = pd.read_parquet(scored["out"])
    texts = [str(t) for t in test["text"]]
    assert model["report"]["serving_file"] == "model.int8.onnx"  # the kind whose answers batching could move
    with running(create_app(model["name"], alias="challenger", poll_seconds=0)) as url:
        answers = []
        for i in range(0, len(texts), 7):
            r = httpx.post(f"{url}/predict", json={"texts": texts[i : i + 7]}, timeout=60)
            assert r.status_code == 200, r.text
            answers += r.json()["predictions"]
    assert [a["label"] for a in answers] == list(out["prediction"])
    for got, want in zip(answers, out["probabilities"]):
        assert got["scores"] == pytest.approx(want, abs=1e-6)


def test_scoring_run_records_input_digest_and_model_version(model, scored):
    from tasks.io import digest_frames
    from tasks.platform import tracking

    run = tracking.client().get_run(scored["result"]["run_id"])
    exp = tracking.client().get_experiment(run.info.experiment_id)
    assert exp.name == "scoring" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["model_name"] == model["name"] and tags["model_version"] == model["version"]
    assert tags["model_alias"] == "challenger"
    assert tags["input_digest"] == digest_frames({"input": pd.read_parquet(model["test"])})
    assert tags["input_source"] == f"file:{model['test']}"
    assert run.data.metrics["rows"] == len(pd.read_parquet(model["test"]))
    assert run.data.metrics["input_f1"] == scored["result"]["metrics"]["f1"]
    [inp] = run.inputs.dataset_inputs
    assert inp.dataset.digest == tags["input_digest"]


def test_cli_scores_a_sql_query_on_an_existing_dask_cluster(model, tmp_path, capsys):
    from distributed import Client, LocalCluster

    from flows.ops.cli import main

    db = tmp_path / "reviews.db"
    rows = pd.read_parquet(model["test"]).head(20)
    with sqlite3.connect(db) as conn:
        rows.rename(columns={"text": "body"})[["body"]].to_sql("reviews", conn, index=False)
    out = tmp_path / "sql.parquet"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = main(
            [
                "score",
                f"{model['name']}/{model['version']}",
                "--input",
                f"sqlite:///{db}",
                "--query",
                "SELECT body FROM reviews",
                "--text-column",
                "body",
                "--output",
                str(out),
                "--dask-address",
                cluster.scheduler_address,
                "--batch-size",
                "4",
                "--shard-rows",
                "4",
            ]
        )
        with Client(cluster) as client:  # 5 shards ran on the one worker: it loaded the bundle once
            loaded = client.run(lambda: [key[:2] for key in __import__("tasks.score").score._PREDICTORS])
    assert code == 0, capsys.readouterr().err
    assert list(loaded.values()) == [[(model["name"], model["version"])]]
    got = pd.read_parquet(out)
    assert list(got["body"]) == list(rows["text"]) and "probabilities" in got.columns
    assert f"version {model['version']}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case",
    [
        "missing_column",
        "empty_file",
        "unknown_model",
        "unknown_alias",
        "unknown_version",
        "blank_text",
        "unknown_label",
    ],
)
def test_bad_input_is_one_clear_error_before_any_worker_starts(case, model, tmp_path, monkeypatch):
    import flows.score
    from tasks.score import ScoreInputError

    started = []
    monkeypatch.setattr(flows.score, "dask_runner", lambda *a: started.append(a))  # a spy: was a cluster asked for?
    test = pd.read_parquet(model["test"])
    good = tmp_path / "in.parquet"
    test.to_parquet(good)
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n")
    blank = tmp_path / "blank.csv"
    blank.write_text('text\ngood film\n"  "\n')
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"text": "good film", "label": "positive"}\n{"text": "meh", "label": "meh"}\n')
    ref, path, column, message = {
        "missing_column": (model["ref"], good, "review", r"column\(s\) \['review'\] not found .* columns present"),
        "empty_file": (model["ref"], empty, "text", "holds no rows"),
        "unknown_model": ("no-such-model", good, "text", "no registered model 'no-such-model'.*registered models"),
        "unknown_alias": (f"{model['name']}@gold", good, "text", "has no alias 'gold' \\(aliases: challenger"),
        "unknown_version": (f"{model['name']}/999", good, "text", "has no version 999"),
        "blank_text": (model["ref"], blank, "text", r"1 row\(s\) .* have no text in column 'text' \(rows \[1\]"),
        "unknown_label": (model["ref"], odd, "text", r"label\(s\) \['meh'\] that the model does not know"),
    }[case]
    with pytest.raises(ScoreInputError, match=message):
        flows.score.score(model=ref, input=str(path), output=str(tmp_path / "o.parquet"), text_column=column)
    assert not started and not (tmp_path / "o.parquet").exists()
