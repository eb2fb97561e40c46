"""The promotion decision's MLflow record on a real store (conftest's temporary SQLite): written, read back, printed."""

from __future__ import annotations

import dataclasses
import json

import pytest

STORED = (
    "model_name",
    "action",
    "decision",
    "challenger_version",
    "champion_before",
    "champion_after",
    "reason",
    "metric",
    "margin",
    "challenger_score",
    "champion_score",
    "eval_source",
    "eval_rows",
    "state",
)


def _promoted(name: str):
    from tasks.registry.decision import PromotionDecision

    return PromotionDecision(
        model_name=name,
        action="promote",
        decision="promoted",
        challenger_version="2",
        champion_before="1",
        champion_after="2",
        reason="f1 0.9100 >= 0.8800 + margin 0.01",
        time="2026-12-01T00:00:00+00:00",
        metric="f1",
        greater_is_better=True,
        margin=0.01,
        challenger_score=0.91,
        champion_score=0.88,
        eval_source="runs:/abc/data/test.parquet",
        eval_rows=40,
        same_data_digest=True,
    )


def test_a_recorded_decision_reads_back_field_for_field(tmp_path):
    from tasks.platform import tracking
    from tasks.registry.decision import PromotionDecision, promotion_history, record_decision

    name = "decision-roundtrip"
    promoted = _promoted(name)
    rollback = PromotionDecision(
        model_name=name,
        action="rollback",
        decision="rolled back",
        challenger_version="1",
        champion_before="2",
        champion_after="1",
        reason="rolled back from version 2 to 1",
        time="2026-12-01T00:01:00+00:00",
    )
    ids = [record_decision(d, {"prefect_flow_run_id": "f"}) for d in (promoted, rollback)]
    rows = promotion_history(name)
    assert [r.record_run_id for r in rows] == ids
    for written, read in zip((promoted, rollback), rows):
        assert {f: getattr(read, f) for f in STORED} == {f: getattr(written, f) for f in STORED}
    assert rows[0].promoted and not rows[1].promoted
    record = json.loads(tracking.download_run_artifact(ids[0], "decision.json", tmp_path).read_text())
    assert record == dataclasses.asdict(promoted) | {"promoted": True}


def test_a_record_written_before_the_state_tag_reads_as_final():
    from tasks.platform import tracking
    from tasks.registry.decision import PROMOTIONS_EXPERIMENT, promotion_history

    name = "decision-older-record"
    tags = {
        "model_name": name,
        "action": "promote",
        "decision": "refused",
        "challenger_version": "3",
        "champion_before": "2",
        "champion_after": "2",
        "reason": "f1 0.8000 does not beat champion 0.9000 by margin 0",
        "metric": "f1",
        "eval_source": "pinned.parquet",
    }  # no `state`: as older versions wrote it
    run_id = tracking.start_run(PROMOTIONS_EXPERIMENT, "older", tags=tags)
    tracking.log_params(run_id, {"margin": 0.0, "metric": "f1", "eval_source": "pinned.parquet", "eval_rows": 12})
    tracking.log_metrics(
        run_id, {"challenger_score": 0.8, "champion_score": 0.9, "margin": 0.0, "eval_rows": 12, "promoted": 0.0}
    )
    tracking.end_run(run_id, "FINISHED")
    [row] = promotion_history(name)
    assert (row.state, row.decision, row.challenger_version, row.champion_after) == ("final", "refused", "3", "2")
    assert (row.challenger_score, row.champion_score, row.eval_rows) == (0.8, 0.9, 12)


def test_every_printer_reads_the_decision_fields():
    from tasks.registry.decision_text import decision_lines, decision_markdown, history_table

    d = dataclasses.replace(_promoted("printed"), record_run_id="run-1")
    lines = "\n".join(decision_lines(d))
    assert "=== promote: printed version 2 PROMOTED ===" in lines and "challenger 0.9100, champion 0.8800" in lines
    assert "champion:  1 -> 2" in lines and "MLflow run run-1" in lines
    md = decision_markdown(d)
    assert md.startswith("# printed: version 2 promoted to champion") and "| scored on | runs:/abc" in md
    assert "(higher is better)" in md and "(40 rows)" in md
    table = history_table([d]).splitlines()
    assert table[0].split()[:4] == ["time", "action", "decision", "version"]
    assert table[2].split()[1:4] == ["promote", "promoted", "2"] and "0.9100" in table[2]
    assert history_table([d], markdown=True).count("\n") == 2


def test_a_decision_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _promoted("frozen").decision = "refused"
