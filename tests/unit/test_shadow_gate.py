"""Shadow report, promotion gate on shadow answers, canary routing and the service's settings (no model needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from tasks.monitoring.prediction_log import open_sink, prediction_record

UTC = dt.UTC


def answer(label: str) -> dict:
    other = "negative" if label == "positive" else "positive"
    return {"label": label, "score": 0.8, "scores": {label: 0.8, other: 0.2}}


@pytest.fixture
def shadowed_log(tmp_path, monkeypatch):
    """Five requests answered by champion v1 and shadowed by challenger v2 (they disagree on two), feedback on four."""
    from tasks.monitoring.feedback import record_feedback

    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path / "log"))
    champion = ["positive", "positive", "negative", "negative", "positive"]
    challenger = ["positive", "negative", "negative", "positive", "positive"]
    truth = ["positive", "negative", "negative", "positive"]  # no feedback on the fifth
    when = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    rows = []
    for i, (a, b) in enumerate(zip(champion, challenger)):
        rows.append(prediction_record(answer(a), f"t{i}", "m", "1", 2.0, request_id=f"r{i}", when=when))
        rows.append(
            prediction_record(answer(b), f"t{i}", "m", "2", 9.0, role="challenger", request_id=f"r{i}", when=when)
        )
    rows.append(
        prediction_record(answer("positive"), "x", "m", "3", 2.0, role="challenger", request_id="r0", when=when)
    )  # an older challenger's shadow: not this comparison
    rows.append(prediction_record(answer("positive"), "y", "other", "1", 2.0, request_id="o1", when=when))
    open_sink().write(rows)
    record_feedback([{"request_id": f"r{i}", "label": label} for i, label in enumerate(truth)])
    return {"champion": champion, "challenger": challenger, "truth": truth}


def test_shadow_report_pairs_answers_and_scores_both_on_feedback(shadowed_log):
    from tasks.monitoring.shadow import shadow_report

    r = shadow_report("m", "1", "2")
    assert (r.answers, r.agreement, r.feedback_rows) == (5, 3 / 5, 4)
    truth = shadowed_log["truth"]
    assert r.champion_accuracy == sum(a == t for a, t in zip(shadowed_log["champion"], truth)) / 4 == 0.5
    assert r.challenger_accuracy == sum(b == t for b, t in zip(shadowed_log["challenger"], truth)) / 4 == 1.0
    assert "5 shadow answers, agreement 0.600" in r.summary() and "challenger 1.000" in r.summary()
    assert shadow_report("m", "1", "7").answers == 0 and shadow_report("m", "1", "7").agreement is None


@pytest.mark.parametrize("needed, promoted", [(0, True), (5, True), (6, False)])
def test_the_gate_refuses_too_few_shadow_answers(shadowed_log, needed, promoted):
    from tasks.monitoring.shadow import check_shadow
    from tasks.platform import tracking

    run_id = tracking.start_run("tests-shadow", "challenger-run")
    tracking.log_params(run_id, {"registry.min_shadow_answers": needed})
    tracking.end_run(run_id)
    gate = check_shadow("m", {"version": "1"}, {"version": "2", "run_id": run_id})
    assert (gate.refusal is None) is promoted and gate.report["answers"] == 5 and gate.report["agreement"] == 0.6
    if promoted:
        assert gate.note == (
            "shadow: 5 shadow answers, agreement 0.600, accuracy on 4 with feedback: champion 0.500, challenger 1.000"
        )
    else:
        assert "only 5 shadow answers of version 2" in gate.refusal and "min_shadow_answers is 6" in gate.refusal


def test_canary_share_follows_the_percent_and_is_stable():
    from deploy.traffic import routes_to_canary

    ids = [f"id-{i}" for i in range(20_000)]
    for percent in (0, 10, 50, 100):
        share = sum(routes_to_canary(i, percent) for i in ids) / len(ids)
        assert share == pytest.approx(percent / 100, abs=0.01)
    assert [routes_to_canary(i, 30) for i in ids[:50]] == [routes_to_canary(i, 30) for i in ids[:50]]


def test_request_ids_are_the_servers_and_a_clients_is_kept_beside_only_when_valid():
    from deploy.traffic import request_ids

    rid, client = request_ids("order-17:a.b")
    assert client == "order-17:a.b" and rid != client and len(rid) == 32
    assert request_ids("order-17:a.b")[0] != rid  # the same client id twice: two requests, two keys
    for bad in (None, "", "has space", "-leading-dash", "x" * 65, "ümlaut", "a\nb"):
        rid, client = request_ids(bad)
        assert client is None and len(rid) == 32


def test_settings_refuse_shadow_without_a_registry_or_on_the_served_alias():
    from deploy.settings import Settings

    with pytest.raises(ValueError, match="registered model"):
        Settings.from_env(bundle_dir="/tmp/b", shadow="challenger")
    with pytest.raises(ValueError, match="served alias itself"):
        Settings.from_env(model_name="m", shadow="champion")
    with pytest.raises(ValueError, match="FTFLOW_CANARY_PERCENT='150'"):
        import os

        os.environ["FTFLOW_CANARY_PERCENT"] = "150"
        try:
            Settings.from_env(model_name="m")
        finally:
            os.environ.pop("FTFLOW_CANARY_PERCENT")
    assert Settings(model_name="m", canary_percent=5).second_alias == "challenger"
    assert Settings(model_name="m", shadow="candidate").second_alias == "candidate"
