"""The whole loop on the real stack, once: serve, feed back, drift, automation, retrain, shadow, gate.

A champion (the session's trained model) is served over HTTP; in-domain requests (its test split) get
feedback on some; a shifted stream (SMS messages) follows. The monitor passes the in-domain window and
flags the shifted one; its event makes the retrain automation create a run of the retrain deployment,
which is executed; the new version trained on the feedback rows and, registry.min_shadow_answers
asking for 20, the gate refuses it until it has answered real requests in shadow; then it counts them.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tasks.config import MonitoringConfig, SourceConfig
from tasks.data.collect import read_source
from tests.integration.test_serve import running
from tests.support import promoted_copy, small_config
from tests.system.test_retrain_automation import wait_for_runs

NAME = "e2e-loop"
UTC = dt.UTC
pytestmark = pytest.mark.slow
# Small windows (the test split has ~36 rows): the reference is the champion's held-out split.
SETTINGS = {
    "min_rows": 20,
    "reference_rows": 50,
    "embedding_rows": 50,
    "permutations": 200,
    "min_feedback_rows": 10,
    "min_feedback_accuracy": 0.3,
}
MIN_SHADOW = 20
GAP_S = 8.0  # between the two streams: the monitor flow's window starts this much after its call at most


def send(client: httpx.Client, texts: list[str], size: int = 16) -> list[dict]:
    """The texts as batch requests; every answered text with its own request id."""
    answers = []
    for i in range(0, len(texts), size):
        r = client.post("/predict", json={"texts": texts[i : i + size]})
        assert r.status_code == 200, r.text
        answers += r.json()["predictions"]
    return answers


def window(start: dt.datetime, end: dt.datetime) -> tuple[MonitoringConfig, dt.datetime]:
    """Monitor settings whose window is exactly [start, end), and the `now` that ends it."""
    return MonitoringConfig(window_hours=(end - start).total_seconds() / 3600, **SETTINGS), end


def test_serve_feed_back_drift_retrain_and_shadow(flow_result, prefect_harness, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    from deploy.service import create_app
    from flows.automations import RETRAIN_DEPLOYMENT, ensure_retrain_automation
    from flows.monitor import monitor
    from flows.retrain import retrain
    from tasks.monitoring.monitor import monitor_model
    from tasks.monitoring.prediction_log import read_predictions
    from tasks.monitoring.shadow import check_shadow
    from tasks.registry import register
    from tasks.registry.promote import promote_challenger

    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("FTFLOW_LOG_TEXTS", "1")
    champion = promoted_copy(flow_result, NAME, tmp_path / "champion")
    test_split = pd.read_parquet(Path(flow_result["result"]["run_dir"]) / "data" / "clean" / "test.parquet")
    shifted = read_source(SourceConfig(kind="package", name="sms_spam")).sample(40, random_state=2)["text"].tolist()
    # The retrain deployment (the config asks for shadow answers before a promotion) and its automation.
    cfg = small_config(
        tmp_path,
        f"registry.model_name={NAME}",
        "registry.experiment=tests",
        f"registry.min_shadow_answers={MIN_SHADOW}",
    )
    deployment_id = retrain.to_deployment(
        RETRAIN_DEPLOYMENT.split("/")[1], parameters={"config": cfg.model_dump(mode="json")}
    ).apply()
    ensure_retrain_automation(NAME)

    t0 = dt.datetime.now(UTC)
    with (
        running(create_app(NAME, poll_seconds=0, shadow="challenger")) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        in_domain = send(client, test_split["text"].tolist())
        truth = test_split["label"].astype(str).tolist()[:20]
        fed_back = [{"request_id": a["request_id"], "label": label} for a, label in zip(in_domain, truth)]
        assert client.post("/feedback", json={"items": fed_back}).json() == {"stored": 20}
        t1 = dt.datetime.now(UTC)
        time.sleep(GAP_S)
        send(client, shifted)
        assert client.get("/model").json()["shadow"]["same_as_served"]  # challenger == champion: nothing to shadow
    assert set(read_predictions(model_name=NAME)["role"]) == {"champion"}

    settings, now = window(t0, t1)
    calm = monitor_model(NAME, settings, now=now)
    assert calm["rows"] == len(test_split) and calm["status"] == "ok", calm["reasons"]
    assert calm["feedback"]["rows"] == 20
    with get_client(sync_client=True) as prefect:
        # The flow's window ends when it starts, a moment from now: it begins inside the gap, after t1.
        settings, _ = window(t1, dt.datetime.now(UTC))
        flagged = monitor(model_name=NAME, monitoring=settings)
        assert flagged["rows"] == len(shifted) and flagged["retrain"], flagged["reasons"]
        [run] = wait_for_runs(prefect, deployment_id)
    assert run.parameters["reason"] == "; ".join(flagged["reasons"])

    result = run_flow(retrain, flow_run=run, parameters=run.parameters)  # what a worker would run
    raw = pd.read_parquet(Path(result["fine_tune"]["run_dir"]) / "data" / "raw" / "all.parquet")
    assert set(test_split["text"].head(20)) <= set(raw["text"])  # the feedback rows are training data
    new = str(result["fine_tune"]["registered"]["version"])
    assert str(register.version_by_alias(NAME, "challenger").version) == new
    refused = result["promotion"]
    assert refused.decision == "refused" and f"only 0 shadow answers of version {new}" in refused.reason

    with (
        running(create_app(NAME, poll_seconds=0, shadow="challenger")) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        again = send(client, test_split["text"].tolist()[: MIN_SHADOW + 4], size=4)
        client.post(
            "/feedback",
            json={"items": [{"request_id": a["request_id"], "label": label} for a, label in zip(again, truth)]},
        )
    shadow_rows = read_predictions(model_name=NAME).query("role == 'challenger'")
    assert set(shadow_rows["model_version"]) == {new} and len(shadow_rows) == MIN_SHADOW + 4

    decision = promote_challenger(NAME, shadow_gate=check_shadow)
    shadow = decision.shadow
    assert (shadow["champion_version"], shadow["challenger_version"]) == (str(champion["version"]), new)
    assert shadow["answers"] == MIN_SHADOW + 4 and 0 <= shadow["agreement"] <= 1 and shadow["feedback_rows"] == 20
    assert shadow["champion_accuracy"] is not None and shadow["challenger_accuracy"] is not None
    assert "min_shadow_answers" not in decision.reason  # enough shadow answers: only the scores decide
