"""The real fine_tune flow under Prefect's test harness with a real MLflow SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_flow_logs_run_with_metrics_and_config(flow_result):
    from tasks.platform import tracking

    res = flow_result["result"]
    run = tracking.client().get_run(res["run_id"])
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert {
        "test_accuracy",
        "test_f1",
        "train_loss",
        "val_f1",
        "onnx_parity_max_abs_diff",
        "onnx_int8_changed_share",
    } <= set(m)
    assert 0.0 <= m["test_accuracy"] <= 1.0
    assert run.data.params["training.learning_rate"] == "0.0001"
    assert "Trainer" not in " ".join(run.data.params)  # curated params, not the Trainer dump
    names = {a.path for a in tracking.client().list_artifacts(res["run_id"])}
    assert {"config.yaml", "data", "evaluation", "onnx", "model"} <= names
    assert {
        "calibration_temperature",
        "validation_ece_before",
        "validation_ece_after",
        "test_ece_before",
        "test_ece_after",
    } <= set(m)
    evaluation = {a.path for a in tracking.client().list_artifacts(res["run_id"], "evaluation")}
    assert "evaluation/reliability_diagram.png" in evaluation
    history = tracking.client().get_metric_history(res["run_id"], "train_loss")
    assert len(history) >= 2 and history[0].step < history[-1].step  # a history, not one value


def test_only_one_mlflow_run_per_flow_run(flow_result):
    from tasks.platform import tracking

    c = tracking.client()
    exp = c.get_experiment_by_name(flow_result["config"].registry.experiment)
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 1  # the Trainer callback did not open a second run


def test_model_version_is_challenger_with_tags(flow_result):
    from tasks.registry.register import version_by_alias

    reg = flow_result["result"]["registered"]
    mv = version_by_alias(reg["name"], "challenger")
    assert mv is not None and str(mv.version) == reg["version"] and mv.run_id == flow_result["result"]["run_id"]
    for tag in (
        "data_digest",
        "config_digest",
        "git_commit",
        "test_accuracy",
        "parity_passed",
        "int8_changed_share",
        "int8_metric_loss",
    ):
        assert tag in mv.tags, tag
    assert mv.tags["parity_passed"] == "True"
    assert mv.tags["config_digest"] == flow_result["config"].digest()


def test_onnx_agrees_with_pytorch(flow_result):
    """The served path (raw texts through the inference core) against the trained PyTorch model, at batch 1 and 3."""
    import pandas as pd

    from tasks.inference.decode import Decision
    from tasks.inference.predictor import OnnxPredictor
    from tasks.io import read_json
    from tasks.modelling.evaluate import load_trained
    from tasks.modelling.export import check_parity
    from tasks.modelling.predict import score_frame, torch_forward

    run_dir = Path(flow_result["result"]["run_dir"])
    model, tok, _ = load_trained(run_dir / "model")
    meta = read_json(run_dir / "onnx" / "finetune_flow.json")  # the bundle's record: the model's and evaluation's
    texts = ["a fine film", "dull", "a long and winding story that never ends", "ok", "A  FINE\u00a0film"]
    df = pd.DataFrame({"text": texts, "label": [meta["labels"][0]] * len(texts)})
    # Like with like: the torch side applies the temperature (and threshold) the bundle carries.
    reference = score_frame(
        torch_forward(model), tok, df, "classification", meta["labels"], 32, decision=Decision.of_meta(meta)
    )["scores"]
    assert meta["decision"]["temperature"] > 0  # evaluation's record, built into the bundle by export
    assert "decision" not in read_json(run_dir / "model" / "finetune_flow.json")  # the trained folder is not edited
    for batch_size in (1, 3):
        core = OnnxPredictor(run_dir / "onnx", model_file="model.onnx", batch_size=batch_size).predict_frame(df)
        parity = check_parity(reference, core, 1e-4)
        assert parity["passed"], parity
    report = read_json(run_dir / "onnx" / "export_report.json")
    test_rows = len(pd.read_parquet(run_dir / "data" / "clean" / "test.parquet"))
    assert report["parity"]["rows"] == test_rows and report["parity"]["texts"] == "raw"
    assert report["parity"]["changed_rows"] == 0 and report["parity"]["max_abs_diff"] <= 1e-4
    assert 0.0 <= report["int8"]["changed_share"] <= 1.0 and report["int8"]["rows"] == test_rows


def test_registered_model_loads_through_mlflow_pyfunc(flow_result):
    import mlflow.pyfunc
    import pandas as pd

    from tasks.platform import tracking

    tracking.configure()
    reg = flow_result["result"]["registered"]
    model = mlflow.pyfunc.load_model(f"models:/{reg['name']}@challenger")
    out = model.predict(pd.DataFrame({"text": ["a wonderful, moving film", "tedious and dull"]}))
    assert list(out["label"].map(lambda v: v in ("positive", "negative"))) == [True, True]


def test_failed_parity_refuses_registration(flow_result):
    from tasks.registry.register import RegistrationRefused, register_model
    from tasks.results import EvaluationResult, ExportResult

    res = flow_result["result"]
    onnx = Path(res["run_dir"]) / "onnx"
    bad = ExportResult(
        dir=str(onnx),
        fp32=str(onnx / "model.onnx"),
        int8=None,
        int8_gate=None,
        parity={"passed": False, "max_abs_diff": 0.5, "atol": 1e-4, "argmax_equal": False},
        serving_file="model.onnx",
        report_path=str(onnx / "export_report.json"),
    )
    evaluation = EvaluationResult(metrics=res["metrics"], dir="", files={}, weak_classes=[], weak_classes_text="")
    with pytest.raises(RegistrationRefused, match="parity"):
        register_model(res["run_id"], bad, evaluation, None, flow_result["config"])


def test_stage_logs_reach_the_run_log_without_library_stdout_noise(prefect_harness):
    """Our modules' log lines reach the Prefect run log; a library's captured stdout does not.

    `datasets` fingerprints a table with dill, which disassembles a function into a captured
    stdout; Prefect's print patch used to forward that listing into the run log.
    """
    import logging
    from uuid import UUID

    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.runtime import flow_run

    from tasks.stages import logs_to_prefect

    @task(log_prints=False)
    @logs_to_prefect
    def stage():
        from datasets import Dataset

        Dataset.from_dict({"x": [1, 2, 3]})
        logging.getLogger("tasks.modelling.train").info("step 1/1 loss=0.5")

    @flow(log_prints=True)
    def one_stage() -> str:
        stage()
        return str(flow_run.get_id())

    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)  # the suite runs at WARNING
    try:
        run_id = one_stage()
        APILogHandler().flush()
    finally:
        prefect_logger.setLevel(level)
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(run_id)])))
    text = "\n".join(entry.message for entry in logs)
    assert "step 1/1 loss=0.5" in text
    assert "LOAD_GLOBAL" not in text and "RETURN_VALUE" not in text


def test_weak_class_report_is_a_prefect_artifact_and_in_the_cli_summary(flow_result, capsys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.ops.cli import print_result

    cfg, res = flow_result["config"], flow_result["result"]
    key = f"{cfg.name}-weak-classes"
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))[:1]
    assert artifact.data.startswith("# Weak classes")
    assert (res["weak_classes"] or "None: every class") in artifact.data
    print_result({**res, "weak_classes": "1 of 2 classes are weak on test: 'positive' is never predicted"})
    assert "WEAK CLASSES: 1 of 2 classes are weak on test: 'positive' is never predicted" in capsys.readouterr().out


def test_baselines_run_beside_the_model_and_their_verdict_reaches_run_tags_card_summary_and_cli(flow_result, capsys):
    """Same splits: the bag of words and the frozen-encoder probe are scored on the test rows the model was."""
    import pandas as pd
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.ops.cli import print_result
    from tasks.io import read_json
    from tasks.modelling.metrics import compute_metrics_for
    from tasks.platform import tracking
    from tasks.registry.register import get_version

    cfg, res = flow_result["config"], flow_result["result"]
    run_dir = Path(res["run_dir"])
    rows = {r["model"]: r for r in res["baselines"]}
    assert set(rows) == {"bag_of_words", "probe", "fine-tuned"}
    # Each baseline's test F1 is the metric of the answers it wrote, on the test split's rows and labels.
    test = pd.read_parquet(run_dir / "data" / "clean" / "test.parquet")
    written = pd.read_parquet(run_dir / "baselines" / "test_predictions.parquet")
    labels = read_json(run_dir / "data" / "clean" / "labels.json")
    refs = [labels.index(str(v)) for v in test["label"]]
    for name in ("bag_of_words", "probe"):
        assert len(written[name]) == len(test)
        assert rows[name]["value"] == pytest.approx(compute_metrics_for("classification", written[name], refs)["f1"])
    m = tracking.client().get_run(res["run_id"]).data.metrics
    assert m["baseline_bag_of_words_test_f1"] == pytest.approx(rows["bag_of_words"]["value"])
    assert m["beats_baseline"] in (0.0, 1.0) and "baselines_seconds" in m
    verdict = "true" if m["beats_baseline"] == 1.0 else "false"
    tags = get_version(res["registered"]["name"], res["registered"]["version"]).tags
    assert tags["beats_baseline"] == verdict and tags["best_baseline"] in ("bag_of_words", "probe")
    card = (run_dir / "model" / "README.md").read_text()
    assert "## Against cheap baselines (same splits)" in card and "| bag_of_words |" in card
    assert res["baseline_verdict"] in card and "| fine-tuned |" in res["baselines_table"]
    key = f"{cfg.name}-baselines-comparison"
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))[:1]
    assert "| fine-tuned |" in artifact.data and res["baseline_verdict"] in artifact.data
    print_result(res)
    out = capsys.readouterr().out
    assert "against cheap baselines" in out and "bag_of_words" in out and res["baseline_verdict"] in out
