"""The data stage as a flow: the real `validate-data` and `fine-tune` flows under Prefect's harness,
logging into a real MLflow SQLite store (no mocks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from tests.support import small_config


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of an MLflow run, recursively."""
    from tasks.platform import tracking

    out = set()
    for item in tracking.client().list_artifacts(run_id, path):
        out |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return out


def only_run(experiment: str):
    from tasks.platform import tracking

    c = tracking.client()
    runs = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_validate_data_flow_logs_reports_docs_and_lineage(prefect_harness, tmp_path):
    from flows.training import validate_only
    from tasks.io import read_json
    from tasks.platform import tracking

    cfg = small_config(tmp_path, "registry.experiment=data-flow-ok")
    result = validate_only(config=cfg)

    # The flow returns only when validation passed; the quickstart's data has no warning either.
    assert result["validation"]["status"] == "passed" and 300 < sum(result["rows"].values()) <= 360
    run = tracking.client().get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["flow"] == "validate-data"
    files = artifact_paths(result["run_id"])
    assert {
        "data/cleaning_report.json",
        "data/quarantine.parquet",
        "data/labels.json",
        "data/validation/summary.json",
        "data/validation/summary.md",
        "data/validation/profile.json",
        "data/validation/data_docs/index.html",
    } <= files
    assert run.data.metrics["data_rows_train"] == result["rows"]["train"]
    # Lineage: each split is a dataset input carrying the clean stage's content digest.
    digest = run.data.tags["data_digest"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    assert {d.dataset.digest for d in inputs.values()} == {digest}
    assert {t.value for t in inputs["train"].tags} == {"training"}
    report = read_json(Path(result["run_dir"]) / "data" / "clean" / "cleaning_report.json")
    assert report["rows_out"] == result["rows"]


def test_failed_critical_expectation_stops_before_training(prefect_harness, tmp_path):
    """Labels outside the declared set are quarantined, which leaves train with one class: refused."""
    from flows.training import fine_tune
    from tasks.data.validate import DataValidationError
    from tasks.io import read_json

    csv = tmp_path / "reviews.csv"
    texts = [f"review number {i} of a film" for i in range(240)]
    pd.DataFrame({"review": texts, "verdict": ["positive", "so-so"] * 120}).to_csv(csv, index=False)
    before = sha256(csv)
    cfg = small_config(
        tmp_path,
        "registry.experiment=data-flow-fail",
        "data.source.kind=file",
        f"data.source.path={csv}",
        "data.text_column=review",
        "data.label_column=verdict",
        "data.labels=[negative, positive]",
        "data.max_rows=null",
    )

    with pytest.raises(DataValidationError) as err:
        fine_tune(config=cfg)

    assert "expect_column_unique_value_count_to_be_between(label): observed 1 (expected min_value=2)" in str(err.value)
    run = only_run("data-flow-fail")
    assert run.info.status == "FAILED"
    assert "data_validation_critical" in run.data.metrics and "train_runtime_s" not in run.data.metrics
    assert {"data/validation/summary.json", "data/cleaning_report.json"} <= artifact_paths(run.info.run_id)
    run_dir = next((tmp_path / "runs").iterdir())
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "model").exists()  # never trained
    report = read_json(run_dir / "data" / "clean" / "cleaning_report.json")
    assert report["removed"]["unknown_label"] == 120
    quarantine = pd.read_parquet(run_dir / "data" / "clean" / "quarantine.parquet")
    assert set(quarantine.loc[quarantine["reason"].eq("unknown_label"), "label"]) == {"so-so"}
    assert sha256(csv) == before  # the raw input is untouched


def test_ftflow_validate_prints_a_success_line(prefect_harness, tmp_path, capsys):
    from flows.ops.cli import main
    from tests.support import ROOT

    code = main(
        [
            "validate",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--set",
            "data.max_rows=360",
            "--set",
            "data.validation.min_rows=50",
            "--set",
            f"run_dir={tmp_path / 'runs'}",
            "--set",
            "registry.experiment=data-flow-cli",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "data valid: rows per split {'train': " in out and "quarantined" in out
    assert only_run("data-flow-cli").info.status == "FINISHED"


def test_unchanged_rerun_reuses_the_data_stage_and_a_changed_one_does_not(prefect_harness, tmp_path):
    import shutil

    from flows.training import validate_only
    from tasks.platform import tracking

    csv = tmp_path / "reviews.csv"
    texts = [f"an honest review number {i}" for i in range(240)]
    pd.DataFrame({"text": texts, "label": ["good", "bad"] * 120}).to_csv(csv, index=False)
    cfg = small_config(
        tmp_path,
        "registry.experiment=data-flow-cache",
        "data.source.kind=file",
        f"data.source.path={csv}",
        "data.max_rows=null",
    )

    def reused(result) -> set[str]:
        tags = tracking.client().get_run(result["run_id"]).data.tags
        return {k for k, v in tags.items() if k.endswith("_reused_from") and v}

    first, second = validate_only(config=cfg), validate_only(config=cfg)
    assert reused(first) == set()
    assert reused(second) == {"data_collect_reused_from", "data_clean_reused_from", "data_validate_reused_from"}
    # The second run folder holds its own copies (not links), and its MLflow run records everything.
    for rel in ("data/raw/all.parquet", "data/clean/train.parquet", "data/validation/data_docs/index.html"):
        a, b = Path(first["run_dir"]) / rel, Path(second["run_dir"]) / rel
        assert b.read_bytes() == a.read_bytes() and b.stat().st_ino != a.stat().st_ino, rel
    assert {"data/cleaning_report.json", "data/validation/data_docs/index.html"} <= artifact_paths(second["run_id"])
    assert len(tracking.client().get_run(second["run_id"]).inputs.dataset_inputs) == 3

    with csv.open("a") as f:
        f.write("one more honest review,good\n")
    third = validate_only(config=cfg)
    assert reused(third) == set()  # the source changed: every stage ran

    shutil.rmtree(third["run_dir"])
    fourth = validate_only(config=cfg)  # cached, but its files are gone: every stage runs again
    assert reused(fourth) == set() and (Path(fourth["run_dir"]) / "data" / "clean" / "train.parquet").exists()
