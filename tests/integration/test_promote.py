"""The gated promotion and rollback on a real MLflow registry (the temporary SQLite store of conftest).

One ladder of decisions runs once per module, in order, on registered model `test-promote`:
v1 a deliberately bad model (trained to answer "negative") -> first champion; v2 the good model of
`flow_result` -> promoted; v3 the weak model again -> refused; v4 the good model with a failed
parity tag -> refused; v5 the good model with failed data validation, on a pinned evaluation
set -> refused; then rollback to the previous champion and forward again with --to.
Versions 2-5 reuse logged model artifacts (a new version of the same run's model), not new trainings.
"""

from __future__ import annotations

import pytest

from tests.support import small_config

NAME = "test-promote"
pytestmark = pytest.mark.slow


def _new_version(source_mv, **tag_overrides) -> str:
    """Register the model of an existing version again under NAME as the challenger."""
    from tasks.registry import register, tracking

    tags = {**source_mv.tags, **{k: str(v) for k, v in tag_overrides.items()}}
    mv = tracking.client().create_model_version(NAME, source=source_mv.source, run_id=source_mv.run_id, tags=tags)
    register.set_alias(NAME, register.CHALLENGER, mv.version)
    return str(mv.version)


def _prefect_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found


@pytest.fixture(scope="module")
def ladder(prefect_harness, flow_result, tmp_path_factory):
    from flows.deploy import promote, rollback
    from tasks.registry import register
    from tasks.registry.promote import promote_challenger, rollback_champion

    tmp = tmp_path_factory.mktemp("weak")
    # A clearly worse model: a few steps with absurd class weights teach it to answer "negative" to
    # nearly everything, so its F1 (of "positive") sits far below the real model's. No int8: shorter.
    weak_cfg = small_config(tmp, f"registry.model_name={NAME}", "registry.experiment=tests-promote",
                            "training.max_steps=3", "training.learning_rate=5e-4",
                            "training.class_weights=[20.0, 0.05]", "export.quantize=false")
    from flows.training import fine_tune

    weak = fine_tune(config=weak_cfg)
    good_reg = flow_result["result"]["registered"]
    good_mv = register.get_version(good_reg["name"], good_reg["version"])
    weak_mv = register.get_version(NAME, weak["registered"]["version"])
    steps = {"weak_version": str(weak_mv.version)}
    steps["first"] = promote(model_name=NAME)
    steps["good_version"] = _new_version(good_mv)
    steps["better"] = promote(model_name=NAME)
    _new_version(weak_mv)
    steps["worse"] = promote_challenger(NAME, margin=0.0)
    _new_version(good_mv, parity_passed=False)
    steps["parity"] = promote_challenger(NAME, margin=0.0)
    pinned = flow_result["result"]["run_dir"] + "/data/clean/test.parquet"
    _new_version(good_mv, data_validation_passed=False)
    steps["data"] = promote_challenger(NAME, margin=0.0, eval_data=pinned)
    steps["champion_before_rollback"] = str(register.version_by_alias(NAME, register.CHAMPION).version)
    steps["rollback"] = rollback(model_name=NAME)
    steps["champion_after_rollback"] = str(register.version_by_alias(NAME, register.CHAMPION).version)
    steps["forward"] = rollback_champion(NAME, to_version=steps["good_version"])
    return steps


def test_first_version_becomes_champion_when_checks_pass(ladder):
    d = ladder["first"]
    assert d["decision"] == "promoted" and d["champion_before"] is None
    assert d["champion_after"] == ladder["weak_version"]
    assert d["challenger_score"] is not None and d["champion_score"] is None


def test_better_challenger_is_promoted_on_the_same_data(ladder):
    d = ladder["better"]
    assert d["decision"] == "promoted", d["reason"]
    assert d["champion_before"] == ladder["weak_version"] and d["champion_after"] == ladder["good_version"]
    assert d["challenger_score"] > d["champion_score"]
    assert d["eval_source"].endswith("data/test.parquet") and d["eval_rows"] > 0


def test_worse_challenger_is_refused_and_champion_unchanged(ladder):
    d = ladder["worse"]
    assert d["decision"] == "refused"
    assert d["challenger_score"] < d["champion_score"]
    assert d["champion_after"] == d["champion_before"] == ladder["good_version"]
    assert "does not beat champion" in d["reason"]


def test_failed_parity_is_refused_even_when_scores_tie(ladder):
    d = ladder["parity"]
    assert d["decision"] == "refused"
    assert d["challenger_score"] == pytest.approx(d["champion_score"])  # same model: the tags alone refuse it
    assert "ONNX parity check did not pass" in d["reason"]
    assert d["champion_after"] == ladder["good_version"]


def test_failed_data_validation_is_refused_on_a_pinned_eval_set(ladder):
    d = ladder["data"]
    assert d["decision"] == "refused" and "data validation did not pass" in d["reason"]
    assert d["eval_source"].endswith("data/clean/test.parquet")
    assert ladder["champion_before_rollback"] == ladder["good_version"]


def test_rollback_returns_to_previous_champion_and_forward_again(ladder):
    d = ladder["rollback"]
    assert d["decision"] == "rolled back"
    assert (d["champion_before"], d["champion_after"]) == (ladder["good_version"], ladder["weak_version"])
    assert ladder["champion_after_rollback"] == ladder["weak_version"]
    fwd = ladder["forward"]
    assert (fwd["champion_before"], fwd["champion_after"]) == (ladder["weak_version"], ladder["good_version"])


def test_history_lists_every_decision_in_order(ladder):
    from flows.deploy import history
    from tasks.registry.promote import history_table

    rows = history(NAME)
    assert [r["decision"] for r in rows] == ["promoted", "promoted", "refused", "refused", "refused",
                                             "rolled back", "rolled back"]
    assert rows[1]["champion_score"] == pytest.approx(ladder["better"]["champion_score"])
    assert all(r["reason"] for r in rows)
    table = history_table(rows)
    assert "ONNX parity check did not pass" in table and len(table.splitlines()) == 2 + len(rows)


def test_decisions_are_mlflow_runs_and_prefect_artifacts(ladder):
    from tasks.registry import tracking

    run = tracking.client().get_run(ladder["better"]["record_run_id"])
    assert run.data.tags["decision"] == "promoted" and run.data.tags["model_name"] == NAME
    assert {"challenger_score", "champion_score", "margin"} <= set(run.data.metrics)
    assert run.data.tags["prefect_flow_run_id"]  # made by the flow, so it carries the flow run
    assert _prefect_artifact("promotion-test-promote")


def test_promote_without_challenger_says_how_to_get_one(prefect_harness):
    from tasks.registry.promote import promote_challenger

    with pytest.raises(ValueError, match="no version with alias 'challenger'.*ftflow run"):
        promote_challenger("no-such-model")


def test_gate_respects_direction_and_margin():
    from tasks.registry.promote import beats, failed_checks

    assert beats(0.80, 0.78, 0.02, True) and not beats(0.79, 0.78, 0.02, True)
    assert beats(0.10, 0.20, 0.05, False) and not beats(0.18, 0.20, 0.05, False)  # errors: lower wins
    assert failed_checks({"parity_passed": "True", "data_validation_passed": "True"}) == []
    assert len(failed_checks({"parity_passed": "True"})) == 1  # a missing tag is not a pass


def test_champion_chain_never_returns_to_a_version_rolled_away_from():
    from tasks.registry.promote import champion_chain

    def rec(decision, before, after):
        return {"decision": decision, "champion_before": before, "champion_after": after}

    # v1 and v2 promoted, v2 rolled back to v1, v3 promoted: a rollback from v3 goes to v1, not v2.
    log = [rec("promoted", None, "1"), rec("promoted", "1", "2"), rec("rolled back", "2", "1"),
           rec("refused", "1", "1"), rec("promoted", "1", "3")]
    assert champion_chain(log) == ["1", "3"]
    assert champion_chain(log[:3]) == ["1"]  # nothing behind v1 any more
    # v3 is bad: `rollback --to 2` (not on the stack); a plain rollback then goes to v1, never back to v3.
    assert champion_chain(log + [rec("rolled back", "3", "2")]) == ["1", "2"]
    # Forward again (`rollback --to 3` from v1 after rolling back to it): v1 stays behind v3.
    assert champion_chain(log + [rec("rolled back", "3", "1"), rec("rolled back", "1", "3")]) == ["1", "3"]


def test_eval_set_with_labels_the_model_lacks_is_refused_by_name():
    import pandas as pd

    from tasks.registry.promote import check_columns

    ints = pd.DataFrame({"text": ["good", "bad", "meh"], "label": [1, 0, None]})
    with pytest.raises(ValueError, match=r"label\(s\) \['0.0', '1.0', '<empty>'\] that the model does not know; "
                                         r"its labels are \['negative', 'positive'\]"):
        check_columns(ints, "classification", "eval.csv", ["negative", "positive"])
    check_columns(ints.assign(label=["positive", "negative", "positive"]), "classification", "eval.csv",
                  ["negative", "positive"])
    tags = pd.DataFrame({"tokens": [["Paris", "is"]], "tags": [["B-LOC", "B-TIME"]]})
    with pytest.raises(ValueError, match=r"\['B-TIME'\]"):
        check_columns(tags, "ner", "eval.parquet", ["O", "B-LOC", "I-LOC"])
    with pytest.raises(ValueError, match="not numbers.*'n/a' in row 1"):
        check_columns(pd.DataFrame({"text": ["a", "b"], "label": [1.5, "n/a"]}), "regression", "eval.csv")


def test_promote_output_when_the_challenger_is_already_champion(capsys):
    from flows.ops.deploy_cli import print_decision

    # What decide() returns when the challenger alias still points at the champion: nothing scored.
    print_decision({"action": "promote", "model_name": "m", "challenger_version": "3", "decision": "refused",
                    "metric": "f1", "challenger_score": None, "champion_score": None, "margin": 0.0,
                    "eval_rows": 10, "eval_source": "x", "champion_before": "3", "champion_after": "3",
                    "reason": "version 3 is already champion; train a new challenger first", "record_run_id": "r"})
    out = capsys.readouterr().out
    assert "REFUSED" in out and "already champion" in out and "f1:" not in out


def test_a_decision_whose_record_cannot_be_written_ends_failed(monkeypatch):
    from tasks.registry import tracking
    from tasks.registry.promote import PROMOTIONS_EXPERIMENT, record_decision

    d = {"model_name": "record-fails", "action": "promote", "decision": "refused", "challenger_version": "1",
         "champion_before": None, "champion_after": None, "reason": "test", "metric": "f1", "eval_source": "x",
         "margin": 0.0, "eval_rows": 3, "challenger_score": 0.5, "champion_score": None}

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tracking, "log_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        record_decision(d)
    [run] = tracking.find_runs(PROMOTIONS_EXPERIMENT, "tags.model_name = 'record-fails'")
    assert run.info.status == "FAILED"
