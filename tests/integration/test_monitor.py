"""The monitor on a real champion (trained, exported, registered, promoted) and real logged traffic."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import MonitoringConfig, SourceConfig
from tasks.data.sources import read_source

NAME = "monitor-sentiment"
UTC = dt.UTC
SETTINGS = MonitoringConfig(
    window_hours=24,
    min_rows=100,
    reference_rows=500,
    embedding_rows=150,
    permutations=200,
    min_feedback_rows=20,
    min_feedback_accuracy=0.3,
)


@pytest.fixture(scope="module")
def champion(flow_result, tmp_path_factory):
    """The session's trained model registered under its own name and promoted through the real gate."""
    from tests.support import promoted_copy

    return promoted_copy(flow_result, NAME, tmp_path_factory.mktemp("champion"))


def log_traffic(champion: dict, texts: list[str], when: dt.datetime) -> list[dict]:
    """Serve `texts` with the champion's ONNX bundle and log each answer, as the service does."""
    from tasks.inference.predictor import OnnxPredictor
    from tasks.monitoring.prediction_log import PredictionLogger, prediction_record

    predictor = OnnxPredictor(champion["bundle"])
    records = [
        prediction_record(
            answer, text, NAME, champion["version"], latency_ms=3.0, when=when + dt.timedelta(seconds=i), keep_text=True
        )
        for i, (text, answer) in enumerate(zip(texts, predictor.predict(texts)))
    ]
    with PredictionLogger() as logger:
        for r in records:
            logger.log(r)
    return records


@pytest.fixture(scope="module")
def traffic(champion, tmp_path_factory):
    """Yesterday: in-domain movie reviews (with feedback on some); now: SMS messages, another domain."""
    from tasks.monitoring.feedback import record_feedback

    # The module's own prediction log, set back when the module is done (a module fixture cannot take monkeypatch).
    env = pytest.MonkeyPatch()
    env.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path_factory.mktemp("predlog")))

    reviews = read_source(SourceConfig(kind="package", name="rotten_tomatoes")).sample(frac=1, random_state=1)
    sms = read_source(SourceConfig(kind="package", name="sms_spam")).sample(300, random_state=1)
    now = dt.datetime.now(UTC)
    yesterday = now - dt.timedelta(days=2)
    in_domain = reviews.iloc[-300:]  # the tail: the small training run used a stable sample of 360 rows
    logged = log_traffic(champion, in_domain["text"].tolist(), yesterday)
    truth = in_domain["label"].tolist()[:40]
    record_feedback([{"request_id": r["request_id"], "label": label} for r, label in zip(logged, truth)])
    log_traffic(champion, sms["text"].tolist(), now - dt.timedelta(hours=1))
    yield {"now": now, "yesterday": yesterday, "in_domain": logged[:40], "truth": truth}
    env.undo()


def test_in_domain_traffic_is_not_flagged_and_feedback_accuracy_is_measured(traffic):
    from tasks.monitoring.monitor import monitor_model

    result = monitor_model(NAME, SETTINGS, now=traffic["yesterday"] + dt.timedelta(hours=1))
    assert result["rows"] == 300 and result["status"] == "ok", result["reasons"]
    assert not result["retrain"] and result["drift"]["tests"]
    expected = np.mean([r["prediction"] == label for r, label in zip(traffic["in_domain"], traffic["truth"])])
    assert result["feedback"] == {"rows": 40, "accuracy": pytest.approx(expected), "mae": None}


def test_shifted_traffic_is_flagged_and_recorded_in_mlflow(traffic, tmp_path):
    from tasks.monitoring.monitor import MONITORING_EXPERIMENT, monitor_model
    from tasks.platform import tracking

    result = monitor_model(NAME, SETTINGS, now=traffic["now"])
    assert result["rows"] == 300 and result["status"] == "retrain_needed" and result["retrain"]
    flagged = {t["name"] for t in result["drift"]["tests"] if t["p_value"] < t["alpha"]}
    assert "embedding" in flagged, result["drift"]  # the held-out reference is small here (26 rows)
    run = tracking.client().get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "retrain_needed"
    assert run.data.metrics["drift_detected"] == 1.0 and run.data.metrics["rows_window"] == 300
    assert tracking.client().get_experiment(run.info.experiment_id).name == MONITORING_EXPERIMENT
    files = {Path(f.path).name for f in tracking.client().list_artifacts(result["run_id"])}
    assert {"report.html", "distributions.png", "monitor.json"} <= files
    html = (tracking.download_run_artifact(result["run_id"], "report.html", tmp_path)).read_text()
    assert "embedding" in html and "data:image/png;base64," in html


def test_too_little_traffic_gives_no_verdict(traffic):
    from tasks.monitoring.monitor import monitor_model

    quiet = monitor_model(NAME, SETTINGS, now=traffic["now"] - dt.timedelta(days=5))
    assert quiet["rows"] == 0 and quiet["status"] == "not_enough_data" and not quiet["retrain"]


def test_a_model_without_champion_is_a_clear_error(traffic):
    from tasks.monitoring.monitor import monitor_model

    with pytest.raises(ValueError, match="no 'champion' version"):
        monitor_model("no-such-model", SETTINGS)


def test_monitor_flow_publishes_an_artifact_and_asks_for_a_retrain(traffic, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.monitor import monitor

    result = monitor(model_name=NAME, monitoring=SETTINGS)
    assert result["retrain"] and result["event_id"]
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()  # the monitor's markdown verdict
    mine = [a for a in artifact if a.key == "monitor-monitor-sentiment"]
    assert mine and "retrain_needed" in mine[0].data


def test_retrain_trains_on_the_feedback_and_records_its_reason(traffic, prefect_harness, tmp_path):
    from flows.retrain import retrain
    from tasks.monitoring.feedback import feedback_rows
    from tasks.platform import tracking
    from tests.support import small_config

    cfg = small_config(tmp_path, f"registry.model_name={NAME}", "registry.experiment=tests")
    result = retrain(config=cfg, reason="embedding drift (mmd p=0.005 < 0.01)")
    run = tracking.client().get_run(result["fine_tune"]["run_id"])
    assert run.data.tags["retrain_reason"] == "embedding drift (mmd p=0.005 < 0.01)"
    raw = pd.read_parquet(Path(result["fine_tune"]["run_dir"]) / "data" / "raw" / "all.parquet")
    fed_back = feedback_rows(NAME)["text"]
    assert len(fed_back) == 40 and set(fed_back) <= set(raw["text"])
    assert result["promotion"].decision in ("promoted", "refused")  # the gate ran on the new challenger


def test_too_few_permutations_for_the_p_value_is_refused():
    with pytest.raises(ValueError, match="at least 100"):
        MonitoringConfig(p_value=0.05, permutations=50)


def test_cli_monitor_speaks_clearly(prefect_harness, capsys):
    from flows.ops.cli import main

    with pytest.raises(SystemExit, match="monitoring.p_value"):
        main(["monitor", NAME, "--set", "p_value=2"])
    assert main(["monitor", "no-such-model"]) == 1
    assert "no 'champion' version" in capsys.readouterr().err
