"""The service's side of the loop for real: uvicorn on loopback, the registry, ONNX Runtime, the Parquet log.

Registered model `loop-serve` gets the session's trained model twice: as champion and as challenger (two
versions with the same weights, so their answers agree).
"""

from __future__ import annotations

import os
import time

import httpx
import pandas as pd
import pytest

from tests.integration.test_serve import running  # uvicorn in a thread, as test_serve runs it

NAME = "loop-serve"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def versions(flow_result, tmp_path_factory):
    """{champion, challenger}: two versions of the trained model, and a prediction log folder of their own."""
    from tasks.platform import tracking
    from tasks.registry import register

    reg = flow_result["result"]["registered"]
    trained = register.get_version(reg["name"], reg["version"])
    tracking.client().create_registered_model(NAME)
    out = {}
    for alias in ("champion", "challenger"):
        mv = tracking.client().create_model_version(
            NAME, source=trained.source, run_id=trained.run_id, tags=dict(trained.tags)
        )
        register.set_alias(NAME, alias, mv.version)
        out[alias] = str(mv.version)
    os.environ["FTFLOW_PREDICTION_LOG"] = str(tmp_path_factory.mktemp("service-log"))
    yield out
    os.environ.pop("FTFLOW_PREDICTION_LOG")


def logged(**where):
    from tasks.monitoring.prediction_log import read_predictions

    rows = read_predictions(model_name=NAME)
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return rows


def test_every_answer_is_logged_with_its_request_id_and_the_log_is_drained_at_shutdown(versions, monkeypatch):
    from deploy.service import create_app
    from tasks.monitoring.prediction_log import text_hash

    monkeypatch.delenv("FTFLOW_LOG_TEXTS", raising=False)
    before = len(logged())
    with running(create_app(NAME, poll_seconds=0)) as url, httpx.Client(base_url=url, timeout=30) as client:
        fresh = client.post("/predict", json={"text": "a wonderful, moving film"})
        rid = fresh.json()["request_id"]
        assert len(rid) == 32 and fresh.headers["x-request-id"] == rid
        assert fresh.json()["predictions"][0]["request_id"] == rid and fresh.json()["model"]["role"] == "champion"
        own = client.post("/predict", json={"text": "dull"}, headers={"X-Request-ID": "client-42.a"})
        # The key is the server's; a valid client id is kept beside it, to correlate.
        assert own.json()["client_request_id"] == own.headers["x-client-request-id"] == "client-42.a"
        assert len(own.json()["request_id"]) == 32 and own.headers["x-request-id"] == own.json()["request_id"]
        bad = client.post("/predict", json={"text": "dull"}, headers={"X-Request-ID": "no spaces; " + "x" * 80})
        assert len(bad.json()["request_id"]) == 32 and bad.json()["client_request_id"] is None  # invalid: dropped
        batch = client.post("/predict", json={"texts": ["tedious", "a delight", "fine"]}).json()
        assert [p["request_id"] for p in batch["predictions"]] == [f"{batch['request_id']}-{i}" for i in range(3)]
        info = client.get("/model").json()
        assert info["prediction_log"]["enabled"] and info["prediction_log"]["logged"] == 6
        assert info["shadow"] == {"enabled": False} and info["canary"] == {"percent": 0.0}
    rows = logged()  # read right after shutdown: the writer's 1-second interval had not passed, the drain wrote them
    assert len(rows) - before == 6
    row = rows[rows["client_request_id"] == "client-42.a"].iloc[0]
    assert row["request_id"] == own.json()["request_id"]
    answer = own.json()["predictions"][0]
    assert (row["role"], row["model_version"], row["prediction"]) == ("champion", versions["champion"], answer["label"])
    assert pd.isna(row["text"]) and row["text_hash"] == text_hash("dull") and row["latency_ms"] > 0
    assert row["confidence"] == pytest.approx(answer["score"])


def test_feedback_is_stored_one_or_many_and_wrong_items_are_422_naming_them(versions, monkeypatch):
    from deploy.service import create_app
    from tasks.monitoring.feedback import read_feedback

    monkeypatch.setenv("FTFLOW_LOG_TEXTS", "1")
    with running(create_app(NAME, poll_seconds=0)) as url, httpx.Client(base_url=url, timeout=30) as client:
        answered = client.post("/predict", json={"texts": ["dull", "great"]}).json()["predictions"]
        ids = [p["request_id"] for p in answered]
        single = client.post("/predict", json={"text": "fine"}).json()["request_id"]
        # Asked right after the answer: the feedback flushes the log first, so the id is found.
        assert client.post("/feedback", json={"request_id": single, "label": "positive"}).json() == {"stored": 1}
        unknown = client.post(
            "/feedback",
            json={
                "items": [
                    {"request_id": ids[0], "label": "negative"},
                    {"request_id": "never-answered", "label": "negative"},
                ]
            },
        )
        assert unknown.status_code == 422
        [err] = unknown.json()["detail"]
        assert err["loc"] == ["body", "items", 1, "request_id"] and "unknown request id" in err["msg"]
        label = client.post("/feedback", json={"request_id": ids[1], "label": "maybe"})
        assert label.status_code == 422 and label.json()["detail"][0]["loc"] == ["body", "label"]
        assert "negative, positive" in label.json()["message"]
        shape = client.post("/feedback", json={"request_id": ids[1]})
        assert shape.status_code == 422 and "'label'" in shape.json()["message"]
        # Spelled with spaces around it, the label is still the class `negative`, and is stored so.
        both = client.post("/feedback", json={"items": [{"request_id": i, "label": " negative "} for i in ids]})
        assert both.json() == {"stored": 2}
    stored = read_feedback().set_index("request_id")["label"]
    # The refused requests stored nothing.
    assert stored.to_dict() == {single: "positive", ids[0]: "negative", ids[1]: "negative"}


def test_one_correction_counts_once_however_many_answers_a_client_sent_with_its_id(versions):
    """30 answers sent with one X-Request-ID and one wrong-label correction: one feedback row, not 30.

    On main the client's id was the key: the correction joined all 30 rows, met min_feedback_rows (30)
    and dropped the feedback accuracy to 0, so one client could force a retrain."""
    from deploy.service import create_app
    from tasks.monitoring.monitor import feedback_quality
    from tasks.monitoring.prediction_log import text_hash

    text = "a one-off text for the feedback integrity test"
    with running(create_app(NAME, poll_seconds=0)) as url, httpx.Client(base_url=url, timeout=30) as client:
        answers = [
            client.post("/predict", json={"text": text}, headers={"X-Request-ID": "same-id"}).json() for _ in range(30)
        ]
        assert len({a["request_id"] for a in answers}) == 30  # each answer its own key
        assert {a["client_request_id"] for a in answers} == {"same-id"}
        predicted = answers[0]["predictions"][0]["label"]
        wrong = "negative" if predicted == "positive" else "positive"
        stored = client.post("/feedback", json={"request_id": answers[0]["request_id"], "label": wrong})
        assert stored.json() == {"stored": 1}
        # The client's own id names no answer: a correction through it is refused, not spread over 30 rows.
        through_client_id = client.post("/feedback", json={"request_id": "same-id", "label": wrong})
        assert through_client_id.status_code == 422 and "unknown request id" in through_client_id.json()["message"]
    window = logged(role="champion")
    window = window[window["text_hash"] == text_hash(text)]
    assert len(window) == 30 and set(window["client_request_id"]) == {"same-id"}
    quality = feedback_quality(window, "classification")
    assert quality["rows"] == 1 and quality["accuracy"] == 0.0


def test_shadow_answers_every_request_off_the_path_and_both_answers_are_logged(versions):
    from deploy.service import create_app
    from tasks.monitoring.shadow import shadow_report

    with (
        running(create_app(NAME, poll_seconds=0, shadow="challenger")) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        answers = [client.post("/predict", json={"text": t}).json() for t in ("dull", "a delight", "fine", "meh")]
        assert {a["model"]["version"] for a in answers} == {versions["champion"]}  # the champion answers
        client.post(
            "/feedback",
            json={
                "items": [
                    {"request_id": answers[0]["request_id"], "label": "negative"},
                    {"request_id": answers[1]["request_id"], "label": "negative"},
                ]
            },
        )
        info = client.get("/model").json()
        assert info["shadow"]["enabled"] and info["shadow"]["alias"] == "challenger"
        assert info["shadow"]["version"] == versions["challenger"] and not info["shadow"]["same_as_served"]
    ids = {a["request_id"] for a in answers}
    shadow = logged(role="challenger")
    assert ids <= set(shadow["request_id"]) and set(shadow["model_version"]) == {versions["challenger"]}
    report = shadow_report(NAME, versions["champion"], versions["challenger"])
    assert report.answers >= 4 and report.agreement == 1.0  # the same weights answer alike
    assert report.feedback_rows == 2 and report.champion_accuracy == report.challenger_accuracy


def test_a_full_shadow_queue_drops_the_oldest_and_never_blocks(versions):
    from deploy.model_holder import ModelHolder
    from deploy.settings import Settings
    from deploy.traffic import ShadowJob, ShadowRunner

    holder = ModelHolder(Settings(model_name=NAME, alias="challenger", poll_seconds=0))
    holder.start()
    try:
        runner = ShadowRunner(holder, None, NAME, max_queue=2)
        texts = ["a long and winding review of a film " * 3] * 16
        t = time.perf_counter()
        for i in range(50):
            runner.submit(ShadowJob([f"r{i}-{j}" for j in range(16)], texts, None, versions["champion"]))
        submitting = time.perf_counter() - t
        runner.close()
    finally:
        holder.stop()
    stats = runner.stats()
    assert submitting < 0.5, f"50 submits took {submitting:.2f} s: submit waited for the model"
    assert stats["dropped"] > 0 and stats["answered"] + stats["dropped"] == 50 and stats["failed"] == 0


def test_canary_answers_a_sticky_share_with_the_challenger(versions):
    from deploy.service import create_app
    from deploy.traffic import routes_to_canary

    ids = [f"canary-{i}" for i in range(24)]
    with (
        running(create_app(NAME, poll_seconds=0, canary_percent=50)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        first = {i: client.post("/predict", json={"text": "fine"}, headers={"X-Request-ID": i}) for i in ids}
        again = {i: client.post("/predict", json={"text": "fine"}, headers={"X-Request-ID": i}) for i in ids}
        assert client.get("/model").json()["canary"]["version"] == versions["challenger"]
    for i in ids:
        expected = versions["challenger"] if routes_to_canary(i, 50) else versions["champion"]
        assert first[i].headers["x-model-version"] == again[i].headers["x-model-version"] == expected
        assert first[i].json()["model"]["role"] == ("canary" if expected == versions["challenger"] else "champion")
    assert 0 < sum(routes_to_canary(i, 50) for i in ids) < len(ids)
    canary_rows = logged(role="canary")
    assert set(canary_rows["model_version"]) == {versions["challenger"]}
    assert set(canary_rows["client_request_id"]) == {i for i in ids if routes_to_canary(i, 50)}


def test_with_per_client_tokens_feedback_is_bound_to_the_client_that_asked(versions):
    from deploy.service import create_app

    alice, bob = "alice-7f3a9c21e4b8d605", "bob-52e8a1c9f7d3b406"
    app = create_app(NAME, poll_seconds=0, client_tokens={"alice": alice, "bob": bob})
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        as_alice, as_bob = ({"Authorization": f"Bearer {t}"} for t in (alice, bob))
        assert client.post("/predict", json={"text": "fine"}).status_code == 401  # a token is needed now
        assert (
            client.post("/predict", json={"text": "fine"}, headers={"Authorization": "Bearer x" * 3}).status_code == 401
        )
        answer = client.post("/predict", json={"text": "a wonderful, moving film"}, headers=as_alice).json()
        rid = answer["request_id"]
        correction = {"request_id": rid, "label": "positive"}
        # Bob may not relabel Alice's answer; he hears what he would for an id never made.
        refused = client.post("/feedback", json=correction, headers=as_bob)
        assert refused.status_code == 422 and "unknown request id" in refused.text
        never = client.post("/feedback", json={"request_id": "0" * 32, "label": "positive"}, headers=as_bob)
        assert never.json()["detail"][0]["msg"].split(":")[-1] == refused.json()["detail"][0]["msg"].split(":")[-1]
        assert client.post("/feedback", json=correction, headers=as_alice).status_code == 200
    row = logged(request_id=rid).iloc[0]
    assert row["client"] == "alice"


def test_client_tokens_are_checked_and_never_echoed():
    from deploy.settings import Settings

    weak = "alice:short,bob:bob-52e8a1c9f7d3b406"
    with pytest.raises(ValueError) as e:
        Settings.from_env(model_name="m", client_tokens=weak)
    assert "client 'alice'" in str(e.value) and "short" not in str(e.value).replace("shortest", "")
    for bad, says in [
        ("alice-7f3a9c21e4b8d605", "not 'name:token'"),
        ("alice:alice-7f3a9c21e4b8d605,alice:bob-52e8a1c9f7d3b406", "given twice"),
        ("a:alice-7f3a9c21e4b8d605,b:alice-7f3a9c21e4b8d605", "share a token"),
    ]:
        with pytest.raises(ValueError, match=says) as e:
            Settings.from_env(model_name="m", client_tokens=bad)
        assert "7f3a9c21" not in str(e.value)
    ok = Settings.from_env(model_name="m", client_tokens="alice:alice-7f3a9c21e4b8d605")
    assert ok.guarded and ok.tokens() == [("alice", "alice-7f3a9c21e4b8d605")]
