"""The gated promotion and rollback on a real MLflow registry (the temporary SQLite store of conftest).

One ladder of decisions runs once per module, in order, on registered model `test-promote`:
v1 a deliberately bad model (trained to answer "negative") on data with duplicate texts (a real
data-validation warning) -> refused while warnings are not allowed, then first champion under its
config's registry.promote_with_data_warnings=true; v2 the good model of `flow_result` -> promoted;
v3 the weak model again -> refused; v4 the good model with a failed parity tag -> refused; v5 the
weak model's version on a pinned evaluation set with warnings not allowed -> refused; then rollback
to the previous champion and forward again with --to.
Versions 2-5 reuse logged model artifacts (a new version of the same run's model), not new trainings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ROOT, small_config, start_together

NAME = "test-promote"
pytestmark = pytest.mark.slow


def _new_version(source_mv, **tag_overrides) -> str:
    """Register the model of an existing version again under NAME as the challenger."""
    from tasks.platform import tracking
    from tasks.registry import register

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
    import pandas as pd

    from flows.deploy import promote, rollback
    from tasks.io import read_frame
    from tasks.monitoring.shadow import check_shadow
    from tasks.registry import register
    from tasks.registry.promote import promote_challenger
    from tasks.registry.rollback import rollback_champion

    tmp = tmp_path_factory.mktemp("weak")
    # The good run's clean rows with 20 texts repeated: duplicate texts are a warning-level
    # expectation, so this real run's data passes validation only with a warning.
    clean = Path(flow_result["result"]["run_dir"]) / "data" / "clean"
    rows = pd.concat([read_frame(clean / f"{s}.parquet")[["text", "label"]] for s in ("train", "validation", "test")])
    csv = tmp / "reviews-with-duplicates.csv"
    pd.concat([rows, rows.head(20)]).to_csv(csv, index=False)
    # A clearly worse model: a few steps with absurd class weights teach it to answer "negative" to
    # nearly everything, so its F1 (of "positive") sits far below the real model's. No int8: shorter.
    weak_cfg = small_config(
        tmp,
        f"registry.model_name={NAME}",
        "registry.experiment=tests-promote",
        "training.max_steps=3",
        "training.learning_rate=5e-4",
        "training.class_weights=[20.0, 0.05]",
        "export.quantize=false",
        "data.source.kind=file",
        f"data.source.path={csv}",
        "data.max_rows=null",
        "data.labels=[negative, positive]",
        "data.clean.drop_duplicates=false",
        "registry.promote_with_data_warnings=true",
    )
    from flows.training import fine_tune

    weak = fine_tune(config=weak_cfg)
    good_reg = flow_result["result"]["registered"]
    good_mv = register.get_version(good_reg["name"], good_reg["version"])
    weak_mv = register.get_version(NAME, weak["registered"]["version"])
    steps = {"weak_version": str(weak_mv.version), "weak_tags": dict(weak_mv.tags)}
    steps["warned"] = promote_challenger(NAME, allow_data_warnings=False, shadow_gate=check_shadow)
    steps["first"] = promote(model_name=NAME)
    steps["good_version"] = _new_version(good_mv)
    steps["better"] = promote(model_name=NAME)
    _new_version(weak_mv)
    steps["worse"] = promote_challenger(NAME, margin=0.0, shadow_gate=check_shadow)
    _new_version(good_mv, parity_passed=False)
    steps["parity"] = promote_challenger(NAME, margin=0.0, shadow_gate=check_shadow)
    pinned = flow_result["result"]["run_dir"] + "/data/clean/test.parquet"
    _new_version(weak_mv)
    steps["data"] = promote_challenger(
        NAME, margin=0.0, eval_data=pinned, allow_data_warnings=False, shadow_gate=check_shadow
    )
    steps["champion_before_rollback"] = str(register.version_by_alias(NAME, register.CHAMPION).version)
    steps["rollback"] = rollback(model_name=NAME)
    steps["champion_after_rollback"] = str(register.version_by_alias(NAME, register.CHAMPION).version)
    steps["forward"] = rollback_champion(NAME, to_version=steps["good_version"])
    return steps


def test_data_warnings_refuse_unless_the_config_allows_them(ladder):
    tags = ladder["weak_tags"]
    assert tags["data_validation"] == "warnings" and int(tags["data_validation_warnings"]) >= 1
    d = ladder["warned"]  # no champion yet: the warning is the only reason to refuse
    assert d.decision == "refused" and d.champion_after is None
    assert d.reason.startswith("data validation passed only with ") and "promote_with_data_warnings" in d.reason


def test_first_version_becomes_champion_when_checks_pass(ladder):
    d = ladder["first"]
    assert d.decision == "promoted" and d.champion_before is None
    assert d.champion_after == ladder["weak_version"]
    assert d.challenger_score is not None and d.champion_score is None


def test_better_challenger_is_promoted_on_the_same_data(ladder):
    d = ladder["better"]
    assert d.decision == "promoted", d.reason
    assert d.champion_before == ladder["weak_version"] and d.champion_after == ladder["good_version"]
    assert d.challenger_score > d.champion_score
    assert d.eval_source.endswith("data/test.parquet") and d.eval_rows > 0


def test_worse_challenger_is_refused_and_champion_unchanged(ladder):
    d = ladder["worse"]
    assert d.decision == "refused"
    assert d.challenger_score < d.champion_score
    assert d.champion_after == d.champion_before == ladder["good_version"]
    assert "does not beat champion" in d.reason


def test_failed_parity_is_refused_even_when_scores_tie(ladder):
    d = ladder["parity"]
    assert d.decision == "refused"
    assert d.challenger_score == pytest.approx(d.champion_score)  # same model: the tags alone refuse it
    assert "ONNX parity check did not pass" in d.reason
    assert d.champion_after == ladder["good_version"]


def test_data_warnings_are_refused_on_a_pinned_eval_set(ladder):
    d = ladder["data"]
    assert d.decision == "refused" and "data validation passed only with" in d.reason
    assert d.eval_source.endswith("data/clean/test.parquet")
    assert ladder["champion_before_rollback"] == ladder["good_version"]


def test_rollback_returns_to_previous_champion_and_forward_again(ladder):
    d = ladder["rollback"]
    assert d.decision == "rolled back"
    assert (d.champion_before, d.champion_after) == (ladder["good_version"], ladder["weak_version"])
    assert ladder["champion_after_rollback"] == ladder["weak_version"]
    fwd = ladder["forward"]
    assert (fwd.champion_before, fwd.champion_after) == (ladder["weak_version"], ladder["good_version"])


def test_history_lists_every_decision_in_order(ladder):
    from flows.deploy import history
    from tasks.registry.decision_text import history_table

    rows = history(NAME)
    assert [r.decision for r in rows] == [
        "refused",
        "promoted",
        "promoted",
        "refused",
        "refused",
        "refused",
        "rolled back",
        "rolled back",
    ]
    assert {r.state for r in rows} == {"final"}
    assert rows[2].champion_score == pytest.approx(ladder["better"].champion_score)
    assert all(r.reason for r in rows)
    table = history_table(rows)
    assert "ONNX parity check did not pass" in table and len(table.splitlines()) == 2 + len(rows)


def test_decisions_are_mlflow_runs_and_prefect_artifacts(ladder):
    from tasks.platform import tracking

    run = tracking.client().get_run(ladder["better"].record_run_id)
    assert run.data.tags["decision"] == "promoted" and run.data.tags["model_name"] == NAME
    assert {"challenger_score", "champion_score", "margin"} <= set(run.data.metrics)
    assert run.data.tags["prefect_flow_run_id"]  # made by the flow, so it carries the flow run
    assert _prefect_artifact("promotion-test-promote")


def test_promote_without_challenger_says_how_to_get_one(prefect_harness):
    from tasks.monitoring.shadow import check_shadow
    from tasks.registry.promote import promote_challenger

    with pytest.raises(ValueError, match="no version with alias 'challenger'.*ftflow run"):
        promote_challenger("no-such-model", shadow_gate=check_shadow)


def test_gate_respects_direction_and_margin():
    from tasks.registry.promote import beats, failed_checks

    assert beats(0.80, 0.78, 0.02, True) and not beats(0.79, 0.78, 0.02, True)
    assert beats(0.10, 0.20, 0.05, False) and not beats(0.18, 0.20, 0.05, False)  # errors: lower wins
    assert failed_checks({"parity_passed": "True", "data_validation": "passed"}) == []
    assert len(failed_checks({"parity_passed": "True"})) == 1  # a missing tag is not a pass
    warned = {"parity_passed": "True", "data_validation": "warnings", "data_validation_warnings": "2"}
    assert "only with 2 warning(s)" in failed_checks(warned)[0] and failed_checks(warned, True) == []


def test_champion_chain_never_returns_to_a_version_rolled_away_from():
    from tasks.registry.decision import PromotionDecision
    from tasks.registry.rollback import champion_chain

    def rec(decision, before, after):
        return PromotionDecision("m", "promote", decision, after or "", before, after, "r", "t")

    # v1 and v2 promoted, v2 rolled back to v1, v3 promoted: a rollback from v3 goes to v1, not v2.
    log = [
        rec("promoted", None, "1"),
        rec("promoted", "1", "2"),
        rec("rolled back", "2", "1"),
        rec("refused", "1", "1"),
        rec("promoted", "1", "3"),
    ]
    assert champion_chain(log) == ["1", "3"]
    assert champion_chain(log[:3]) == ["1"]  # nothing behind v1 any more
    # v3 is bad: `rollback --to 2` (not on the stack); a plain rollback then goes to v1, never back to v3.
    assert champion_chain([*log, rec("rolled back", "3", "2")]) == ["1", "2"]
    # Forward again (`rollback --to 3` from v1 after rolling back to it): v1 stays behind v3.
    assert champion_chain([*log, rec("rolled back", "3", "1"), rec("rolled back", "1", "3")]) == ["1", "3"]


def test_eval_set_with_labels_the_model_lacks_is_refused_by_name():
    import pandas as pd

    from tasks.registry.holdout import check_columns

    ints = pd.DataFrame({"text": ["good", "bad", "meh"], "label": [1, 0, None]})
    with pytest.raises(
        ValueError,
        match=r"label\(s\) \['0.0', '1.0', '<empty>'\] that the model does not know; "
        r"its labels are \['negative', 'positive'\]",
    ):
        check_columns(ints, "classification", "eval.csv", ["negative", "positive"])
    check_columns(
        ints.assign(label=["positive", "negative", "positive"]), "classification", "eval.csv", ["negative", "positive"]
    )
    tags = pd.DataFrame({"tokens": [["Paris", "is"]], "tags": [["B-LOC", "B-TIME"]]})
    with pytest.raises(ValueError, match=r"\['B-TIME'\]"):
        check_columns(tags, "ner", "eval.parquet", ["O", "B-LOC", "I-LOC"])
    with pytest.raises(ValueError, match="not numbers.*'n/a' in row 1"):
        check_columns(pd.DataFrame({"text": ["a", "b"], "label": [1.5, "n/a"]}), "regression", "eval.csv")


def test_promote_output_when_the_challenger_is_already_champion(capsys):
    from flows.ops.deploy_cli import print_decision
    from tasks.registry.decision import PromotionDecision

    # What decide() returns when the challenger alias still points at the champion: nothing scored.
    print_decision(
        PromotionDecision(
            model_name="m",
            action="promote",
            decision="refused",
            challenger_version="3",
            champion_before="3",
            champion_after="3",
            reason="version 3 is already champion; train a new challenger first",
            time="t",
            metric="f1",
            margin=0.0,
            eval_rows=10,
            eval_source="x",
            record_run_id="r",
        )
    )
    out = capsys.readouterr().out
    assert "REFUSED" in out and "already champion" in out and "f1:" not in out


def test_a_decision_whose_record_cannot_be_written_ends_failed(monkeypatch):
    from tasks.platform import tracking
    from tasks.registry.decision import PROMOTIONS_EXPERIMENT, PromotionDecision, record_decision

    d = PromotionDecision(
        model_name="record-fails",
        action="promote",
        decision="refused",
        challenger_version="1",
        champion_before=None,
        champion_after=None,
        reason="test",
        time="t",
        metric="f1",
        eval_source="x",
        margin=0.0,
        eval_rows=3,
        challenger_score=0.5,
    )

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(tracking, "log_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        record_decision(d)
    [run] = tracking.find_runs(PROMOTIONS_EXPERIMENT, "tags.model_name = 'record-fails'")
    assert run.info.status == "FAILED"


TXN = "test-promote-txn"


@pytest.fixture(scope="module")
def txn(prefect_harness, flow_result, tmp_path_factory):
    """Promotions as transactions, in order, on copies of the good model under TXN.

    v1, v2 promoted; v3 promoted by two `ftflow promote` processes started together; v4's promotion
    fails between its record and the alias move; v5's process dies after the alias moved, before
    its record is finalised.
    """
    from prefect.settings import PREFECT_API_URL

    from tasks.monitoring.shadow import check_shadow
    from tasks.platform import tracking
    from tasks.registry import decision, register, rollback
    from tasks.registry import promote as p

    good = flow_result["result"]["registered"]
    mv = register.get_version(good["name"], good["version"])
    register.ensure_registered_model(TXN, "transaction tests")
    v = [
        str(tracking.client().create_model_version(TXN, source=mv.source, run_id=mv.run_id, tags=mv.tags).version)
        for _ in range(5)
    ]
    steps: dict = {"v": v}
    for version in v[:2]:
        assert p.promote_challenger(TXN, version=version, margin=0.0, shadow_gate=check_shadow).decision == "promoted"
    steps["together"] = start_together(
        [["promote", TXN, "--version", v[2], "--margin", "0"]] * 2,
        tmp_path_factory.mktemp("together"),
        {"PREFECT_API_URL": PREFECT_API_URL.value()},
    )
    steps["champion_after_together"] = decision.champion_version(TXN)
    # Read now: later tests add decisions on these versions (the history is live, the tests run in any order).
    steps["history_after_together"] = decision.promotion_history(TXN)

    real_set_alias = register.set_alias

    def registry_fails(name, alias, version):
        if alias == register.CHAMPION:
            raise ConnectionError("the registry went away")
        return real_set_alias(name, alias, version)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(ConnectionError):
        patch.setattr(register, "set_alias", registry_fails)
        p.promote_challenger(TXN, version=v[3], margin=0.0, shadow_gate=check_shadow)
    steps["history_after_failure"] = decision.promotion_history(TXN)
    steps["champion_after_failure"] = decision.champion_version(TXN)
    steps["rollback_target_after_failure"] = rollback.previous_champion(TXN, steps["champion_after_failure"])

    class Killed(BaseException):
        """What a kill -9 leaves: nothing after this point runs, the record stays pending."""

    def killed(run_id):
        raise Killed()

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Killed):
        patch.setattr(p, "finalise_decision", killed)
        p.promote_challenger(TXN, version=v[4], margin=0.0, shadow_gate=check_shadow)
    steps["history_after_kill"] = decision.promotion_history(TXN)
    steps["rollback_target_after_kill"] = rollback.previous_champion(TXN, decision.champion_version(TXN))
    # the lock was released
    steps["after_kill"] = p.promote_challenger(TXN, version=v[0], margin=0.0, shadow_gate=check_shadow)
    return steps


def test_two_promotions_started_together_move_the_alias_once(txn):
    (code_a, out_a), (code_b, out_b) = txn["together"]
    assert sorted([code_a, code_b]) == [0, 4], (out_a[-2000:], out_b[-2000:])
    refused = out_a if code_a == 4 else out_b
    assert "another promotion or rollback is in progress (promote version" in refused
    assert txn["champion_after_together"] == txn["v"][2]
    moves = [r for r in txn["history_after_together"] if r.challenger_version == txn["v"][2]]
    assert [(r.decision, r.state) for r in moves] == [("promoted", "final")]


def test_a_failure_between_record_and_alias_leaves_history_and_rollback_target_right(txn):
    from tasks.platform import tracking

    _, v2, v3, v4, _ = txn["v"]
    last = txn["history_after_failure"][-1]
    assert (last.challenger_version, last.state, last.decision) == (v4, "aborted", "not applied")
    assert last.champion_before == last.champion_after == v3 and "did not complete" in last.reason
    assert tracking.client().get_run(last.record_run_id).info.status == "FAILED"
    assert txn["champion_after_failure"] == v3
    assert txn["rollback_target_after_failure"] == v2


def test_a_record_left_pending_after_the_alias_moved_reads_as_promoted(txn):
    from tasks.platform import tracking

    v3, v5 = txn["v"][2], txn["v"][4]
    last = txn["history_after_kill"][-1]
    assert (last.challenger_version, last.state, last.decision, last.champion_after) == (v5, "pending", "promoted", v5)
    assert "record not finalised" in last.reason
    assert tracking.client().get_run(last.record_run_id).info.status == "RUNNING"
    assert txn["rollback_target_after_kill"] == v3
    # The lock was released and the next promotion reads the champion the alias shows (v1 is the same model: a tie)
    assert (txn["after_kill"].decision, txn["after_kill"].champion_before) == ("promoted", v5)


def test_unfinished_records_are_read_by_where_the_alias_is():
    from tasks.registry.decision import PromotionDecision, resolve_unfinished
    from tasks.registry.rollback import champion_chain

    def rec(state, before, after, decision="promoted"):
        return PromotionDecision("m", "promote", decision, after or "", before, after, "r", "t", state=state)

    # killed before the alias moved: the next decision still found v1 as champion
    log = [rec("final", None, "1"), rec("pending", "1", "2"), rec("final", "1", "1", "refused")]
    assert [r.decision for r in resolve_unfinished(log, "1")] == ["promoted", "not applied", "refused"]
    assert champion_chain(resolve_unfinished(log, "1")) == ["1"]
    # killed after the alias moved, nothing recorded since: the champion is its target now
    assert champion_chain(resolve_unfinished(log[:2], "2")) == ["1", "2"]
    assert champion_chain(resolve_unfinished(log[:2], "1")) == ["1"]


def test_rollback_to_a_bundle_that_cannot_serve_is_refused(txn, flow_result, tmp_path):
    import mlflow.artifacts

    from tasks.io import read_json
    from tasks.platform import tracking
    from tasks.registry import register
    from tasks.registry.decision import champion_version, promotion_history
    from tasks.registry.rollback import rollback_champion

    good = register.get_version(
        flow_result["result"]["registered"]["name"], flow_result["result"]["registered"]["version"]
    )
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=good.source, dst_path=str(tmp_path)))
    bundle = next(p.parent for p in local.rglob("finetune_flow.json"))
    serving = bundle / read_json(bundle / "finetune_flow.json")["serving_file"]
    serving.write_bytes(serving.read_bytes()[:4096])  # cut off, as by a full disk on upload
    tracking.client().log_artifacts(good.run_id, str(local), "model-cut-off")
    source = f"{tracking.client().get_run(good.run_id).info.artifact_uri}/model-cut-off"
    broken = tracking.client().create_model_version(TXN, source=source, run_id=good.run_id, tags=good.tags).version
    before, records = champion_version(TXN), len(promotion_history(TXN))
    with pytest.raises(ValueError, match=f"version {broken} cannot serve .*the champion stays version {before}"):
        rollback_champion(TXN, to_version=str(broken))
    assert champion_version(TXN) == before and len(promotion_history(TXN)) == records


def test_a_lock_left_by_a_dead_process_is_cleared_and_a_live_one_refuses():
    import socket
    import subprocess

    from tasks.platform import tracking
    from tasks.registry.lock import PromotionBusy, lock_name, promotion_lock

    name = "test-promote-lock"
    dead = subprocess.Popen(["true"])
    dead.wait()
    c = tracking.client()
    c.create_registered_model(
        lock_name(name),
        tags={"action": "promote version 9", "pid": str(dead.pid), "host": socket.gethostname(), "since": "earlier"},
    )
    with promotion_lock(name, "promote version 10"):  # the holder is gone: its lock is cleared
        assert c.get_registered_model(lock_name(name)).tags["action"] == "promote version 10"
        with (
            pytest.raises(PromotionBusy, match=r"in progress \(promote version 10, pid \d+ .*--break-lock"),
            promotion_lock(name, "rollback"),
        ):
            pass
    assert not list(c.search_registered_models(f"name = '{lock_name(name)}'"))  # released


# A promoter in its own process: its MLflow client warmed up, waits for GO, then takes MODEL's lock and holds it 10 s.
LOCK_WORKER = """
import sys, time
from pathlib import Path
from tasks.platform import tracking
from tasks.registry.lock import PromotionBusy, promotion_lock
go, out, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
tracking.client().search_registered_models(max_results=1)  # the first call opens the store: seconds
Path(f"{go}.ready-{out.name}").touch()
while not go.exists():
    time.sleep(0.002)
try:
    with promotion_lock(model, "promote version 2"):
        out.write_text(f"entered {time.time()}")
        time.sleep(10)
        out.write_text(out.read_text() + f" left {time.time()}")
except PromotionBusy as e:
    out.write_text(f"busy {e}")
"""


def test_promoters_released_together_on_a_dead_lock_let_exactly_one_in(tmp_path):
    """On main each promoter deleted the dead lock by name: the second's delete removed the first one's live
    lock and both entered (and the first's release deleted the second's lock)."""
    import itertools
    import os
    import socket
    import subprocess
    import sys
    import time

    from tasks.platform import tracking
    from tasks.registry.lock import lock_name, promotion_lock

    name, workers = "test-promote-lock-race", 4
    dead = subprocess.Popen(["true"])
    dead.wait()
    c = tracking.client()
    c.create_registered_model(
        lock_name(name),
        tags={"action": "promote version 1", "pid": str(dead.pid), "host": socket.gethostname(), "since": "earlier"},
    )
    go = tmp_path / "go"
    outs = [tmp_path / f"worker-{i}" for i in range(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_WORKER, str(go), str(o), name], env=env) for o in outs]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.ready-*"))) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all released at the same instant
    assert [p.wait(timeout=180) for p in procs] == [0] * workers
    said = [o.read_text() for o in outs]
    entered = [s for s in said if s.startswith("entered")]
    spans = sorted((float(s.split()[1]), float(s.split()[3])) for s in entered)
    assert all(left <= enter for (_, left), (enter, _) in itertools.pairwise(spans)), said  # never two at once
    assert len(entered) == 1, said
    assert all(s.startswith("busy") and "promote version 2" in s for s in said if s not in entered), said
    assert not list(c.search_registered_models(f"name = '{lock_name(name)}'"))  # released by its holder
    with promotion_lock(name, "rollback"):  # and free again
        pass


def test_a_model_name_cannot_be_a_lock_name():
    from tasks.config.base import check_name
    from tasks.registry.lock import lock_name

    with pytest.raises(ValueError, match="may hold only letters"):
        check_name(lock_name("m"), "registry.model_name")


def test_a_champion_moved_while_scoring_refuses_the_promotion(txn, monkeypatch):
    from tasks.monitoring.shadow import check_shadow
    from tasks.registry import decision, register
    from tasks.registry import promote as p

    v1, v2, v3 = txn["v"][:3]
    assert decision.champion_version(TXN) == v1  # where the transaction fixture left it
    real_decide = p.decide

    def someone_moves_the_alias(*args, **kwargs):  # e.g. a user in the MLflow UI, around the lock
        d = real_decide(*args, **kwargs)
        register.set_alias(TXN, register.CHAMPION, v2)
        return d

    monkeypatch.setattr(p, "decide", someone_moves_the_alias)
    d = p.promote_challenger(TXN, version=v3, margin=0.0, shadow_gate=check_shadow)
    assert d.decision == "refused" and f"the champion changed while scoring (version {v1} then, {v2} now)" in d.reason
    assert decision.champion_version(TXN) == v2 and d.champion_before == d.champion_after == v2


def test_nightly_promotes_the_version_its_run_registered(prefect_harness, flow_result, tmp_path, monkeypatch):
    import flows.nightly
    from tasks.platform import tracking
    from tasks.registry import register

    name = "test-nightly"
    good = register.get_version(
        flow_result["result"]["registered"]["name"], flow_result["result"]["registered"]["version"]
    )
    real_fine_tune = flows.nightly.fine_tune
    other: dict = {}

    def another_run_registers_too(config):  # a second run registers between this run's training and its promotion
        trained = real_fine_tune(config=config)
        mv = tracking.client().create_model_version(name, source=good.source, run_id=good.run_id, tags=good.tags)
        register.set_alias(name, register.CHALLENGER, mv.version)
        other["version"] = str(mv.version)
        return trained

    monkeypatch.setattr(flows.nightly, "fine_tune", another_run_registers_too)
    cfg = small_config(
        tmp_path,
        f"registry.model_name={name}",
        "registry.experiment=tests-nightly",
        "training.max_steps=2",
        "export.quantize=false",
    )
    result = flows.nightly.nightly(config=cfg)
    own = result["fine_tune"]["registered"]["version"]
    assert own != other["version"] == str(register.version_by_alias(name, register.CHALLENGER).version)
    assert result["promotion"].challenger_version == own
