"""Promote: re-score challenger and champion on the same held-out data, gate, move `champion`, log why.

The gate (every part must hold):
- the challenger's ONNX parity check passed, and its data validation passed (version tag
  `data_validation`; "warnings" refuses unless registry.promote_with_data_warnings allows it);
- there is no champion yet, or the challenger's primary metric beats the champion's by the
  margin on the SAME data: the challenger run's held-out split (`data/test.parquet` artifact)
  or a pinned evaluation set. Stored metrics are never compared: each model is re-scored,
  with the ONNX file it serves.

A promotion (or rollback) is a transaction: one per model at a time (a lock in the registry);
the champion is re-read just before the alias moves and the move is refused if it changed;
the decision record is written first (state "pending"), then the alias moves, then the record
is finalised. A record left pending by a crash is read back by what the alias shows.

Every decision, and every rollback, becomes a run in the MLflow experiment `promotions`
(tags say what happened and why, metrics hold both scores); `promotion_history` reads them back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from tasks.registry import register, tracking
from tasks.io import read_frame, read_json
from tasks.labels import labels_as_strings
from tasks.monitoring.shadow import apply_shadow_gate

PROMOTIONS_EXPERIMENT = "promotions"
HELD_OUT_ARTIFACT = "data/test.parquet"
MARGIN_PARAM = "registry.promotion_margin"  # the training run's config value, the default margin
WARNINGS_PARAM = "registry.promote_with_data_warnings"  # likewise, the default data-warnings policy
LOCK_SUFFIX = ".promotion-lock"  # registered model that exists while a promotion of NAME runs
# A decision record's `state` tag: written "pending" before the alias moves, "final" after;
# "aborted" when the move failed in-process. Records without the tag (older) are final.
PENDING, FINAL, ABORTED = "pending", "final", "aborted"
CHECK_TEXT = "a short sentence to check that the model answers"  # rollback's one prediction


class PromotionBusy(ValueError):
    """Another promotion or rollback of the same model is in progress."""


class ChampionMoved(ValueError):
    """The champion changed while a promotion or rollback was deciding."""


def lock_holder(action: str) -> dict:
    """Who takes the promotion lock: shown to a refused second promotion, used to clear a dead holder's lock."""
    return {"action": action, "pid": str(os.getpid()), "host": socket.gethostname(), "since": now_iso()}


def holder_is_dead(tags: dict) -> bool:
    """True when the lock's holder was a process on this machine that no longer exists."""
    if tags.get("host") != socket.gethostname() or not str(tags.get("pid", "")).isdigit():
        return False
    try:
        os.kill(int(tags["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def promotion_lock(name: str, action: str, break_lock: bool = False) -> Iterator[None]:
    """Hold the one-promotion-per-model lock while the block runs; refuse at once if another holds it.

    The lock is a registered model `NAME.promotion-lock`: creating a registered model is atomic in
    every MLflow store (local SQLite or a tracking server), so two processes on two machines get
    one winner. A lock left by a killed process on this machine is cleared; elsewhere `break_lock`
    (`ftflow promote NAME --break-lock`) clears it.
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    lock = f"{name}{LOCK_SUFFIX}"
    for attempt in (1, 2):
        try:
            c.create_registered_model(lock, tags=lock_holder(action),
                                      description=f"held while a promotion or rollback of '{name}' runs")
            break
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            try:
                held = dict(c.get_registered_model(lock).tags)
            except MlflowException:
                held = {}  # released in between: try once more
            if attempt == 1 and (not held or break_lock or holder_is_dead(held)):
                with contextlib.suppress(MlflowException):
                    if held:
                        c.delete_registered_model(lock)
                continue
            raise PromotionBusy(
                f"model '{name}': another promotion or rollback is in progress ({held.get('action', '?')}, pid "
                f"{held.get('pid', '?')} on {held.get('host', '?')} since {held.get('since', '?')}); nothing was "
                f"changed. Run again when it has finished; if that process is gone, clear its lock with "
                f"`ftflow promote {name} --break-lock`") from None
    try:
        yield
    finally:
        c.delete_registered_model(lock)


def load_version(name: str, version: str, workdir: Path, role: str) -> dict:
    """One version with its serving bundle downloaded."""
    mv = register.get_version(name, version)
    bundle = register.download_bundle(name, mv.version, workdir / f"{role}-v{mv.version}")
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags), "bundle": bundle,
            "meta": read_json(bundle / "finetune_flow.json")}


def load_candidate(name: str, alias: str, workdir: Path) -> dict | None:
    """The version holding `alias` with its serving bundle downloaded, or None when the alias is unset."""
    mv = register.version_by_alias(name, alias)
    return None if mv is None else load_version(name, str(mv.version), workdir, alias)


def champion_version(name: str) -> str | None:
    """The version `champion` points at now (read from the registry), or None."""
    mv = register.version_by_alias(name, register.CHAMPION)
    return None if mv is None else str(mv.version)


def challenger_version(name: str) -> str:
    """The version `challenger` points at now; the error says how to make one."""
    mv = register.version_by_alias(name, register.CHALLENGER)
    if mv is None:
        known = [v.version for v in register.list_versions(name)]
        raise ValueError(f"model '{name}' has no version with alias '{register.CHALLENGER}' "
                         f"(versions: {known or 'none'}); train one with `ftflow run CONFIG` whose "
                         f"registry.model_name is '{name}'")
    return str(mv.version)


def check_bundle_answers(bundle: Path) -> None:
    """Load a bundle's ONNX session and make one prediction; raise if it cannot serve."""
    from tasks.inference.predictor import OnnxPredictor

    predictor = OnnxPredictor(bundle, threads=1)
    answers = predictor.predict([CHECK_TEXT], [CHECK_TEXT] if predictor.needs_pairs else None)
    if len(answers) != 1:
        raise ValueError(f"the bundle at {bundle} answered {len(answers)} results for one text")


def read_eval_frame(eval_data: str | None, challenger_run_id: str, workdir: Path) -> tuple[pd.DataFrame, str]:
    """The held-out frame both models are scored on, and where it came from."""
    if eval_data:
        path = Path(eval_data)
        if not path.exists():
            raise ValueError(f"evaluation set '{eval_data}' does not exist; give a parquet, csv or jsonl file "
                             f"with the columns of a run's data/clean/test.parquet")
        readers = {".parquet": read_frame, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True)}
        if path.suffix not in readers:
            raise ValueError(f"evaluation set '{eval_data}': unknown format '{path.suffix}'; use "
                             f"{', '.join(readers)}")
        return readers[path.suffix](path), str(path.resolve())
    try:
        local = tracking.download_run_artifact(challenger_run_id, HELD_OUT_ARTIFACT, workdir / "eval")
    except Exception as e:
        raise ValueError(f"the challenger's run {challenger_run_id} has no '{HELD_OUT_ARTIFACT}' artifact ({e}); "
                         f"pass a pinned evaluation set: ftflow promote NAME --eval-data PATH") from None
    return read_frame(local), f"runs:/{challenger_run_id}/{HELD_OUT_ARTIFACT}"


def check_columns(df: pd.DataFrame, task: str, where: str, labels: list[str] | None = None) -> None:
    """Refuse an evaluation set without the task's columns, without rows, or with labels the model lacks."""
    need = {"ner": ["tokens", "tags"], "pair_classification": ["text", "text_pair", "label"]}.get(
        task, ["text", "label"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"evaluation set {where} lacks column(s) {missing} for a {task} model; it has "
                         f"{list(df.columns)}. Use the layout of a run's data/clean/test.parquet")
    if df.empty:
        raise ValueError(f"evaluation set {where} has no rows")
    if task == "regression":
        bad = df.loc[pd.to_numeric(df["label"], errors="coerce").isna(), "label"]
        if len(bad):
            raise ValueError(f"evaluation set {where}: {len(bad)} label(s) are not numbers (e.g. {bad.iloc[0]!r} "
                             f"in row {bad.index[0]}); a regression model needs a numeric label in every row")
        return
    if labels is None:
        return
    seen = df["tags"].explode() if task == "ner" else df["label"]
    unknown = sorted({str(v) for v in seen.dropna()} - set(labels)) + (["<empty>"] if seen.isna().any() else [])
    if unknown:
        raise ValueError(f"evaluation set {where} has label(s) {unknown[:10]} that the model does not know; its "
                         f"labels are {labels}. Map the labels to these names (as in data/clean/test.parquet)")


def score_bundle(bundle: Path, df: pd.DataFrame) -> dict:
    """The task metrics of a serving bundle (the ONNX file it serves) on a labelled frame, via the inference core."""
    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling.predict import metrics_of

    return metrics_of(OnnxPredictor(bundle).predict_frame(df), df)


def failed_checks(tags: dict, allow_data_warnings: bool = False) -> list[str]:
    """The required checks a version's tags do not show as passed (data warnings fail unless allowed)."""
    failed = []
    if str(tags.get(register.PARITY_TAG)).lower() != "true":
        failed.append(f"ONNX parity check did not pass (tag {register.PARITY_TAG}="
                      f"{tags.get(register.PARITY_TAG, 'missing')})")
    status = tags.get(register.DATA_VALIDATION_TAG)
    if status is None:
        failed.append(f"data validation result missing (no tag {register.DATA_VALIDATION_TAG}); register the "
                      f"version through `ftflow run`, which validates its data")
    elif status == "warnings" and not allow_data_warnings:
        failed.append(f"data validation passed only with {tags.get(register.DATA_WARNINGS_TAG, '?')} warning(s) "
                      f"(tag {register.DATA_VALIDATION_TAG}=warnings; see the run's data/validation/summary.md); "
                      f"set registry.promote_with_data_warnings=true or pass --allow-data-warnings to accept them")
    elif status not in ("passed", "warnings"):
        failed.append(f"data validation did not pass (tag {register.DATA_VALIDATION_TAG}={status})")
    return failed


def beats(challenger: float, champion: float, margin: float, greater_is_better: bool) -> bool:
    """True when the challenger is at least `margin` better (higher, or lower for errors)."""
    return challenger >= champion + margin if greater_is_better else challenger <= champion - margin


def default_margin(challenger_run_id: str) -> float:
    """The margin the challenger's config asked for (registry.promotion_margin), else 0."""
    try:
        return float(tracking.run_params(challenger_run_id).get(MARGIN_PARAM, 0.0))
    except (ValueError, TypeError):
        return 0.0


def default_allow_data_warnings(challenger_run_id: str) -> bool:
    """The challenger config's registry.promote_with_data_warnings, else False."""
    return str(tracking.run_params(challenger_run_id).get(WARNINGS_PARAM, "False")).lower() == "true"


def decide(name: str, challenger: dict, champion: dict | None, df: pd.DataFrame, margin: float,
           allow_data_warnings: bool = False) -> dict:
    """Score both on `df` and apply the gate; returns the decision (nothing is moved here)."""
    from tasks.modelling.metrics import greater_is_better, primary_metric

    task = challenger["meta"]["task"]
    metric = primary_metric(task)
    better_high = greater_is_better(metric)
    d = {"metric": metric, "greater_is_better": better_high, "margin": margin, "challenger_score": None,
         "champion_score": None}
    if champion is not None and champion["version"] == challenger["version"]:
        d.update(promoted=False, reason=f"version {challenger['version']} is already champion; train a new "
                                        f"challenger first")
        return d
    d["challenger_score"] = score_bundle(challenger["bundle"], df)[metric]
    reasons = failed_checks(challenger["tags"], allow_data_warnings)
    if champion is None:
        d["promoted"] = not reasons
        d["reason"] = "; ".join(reasons) if reasons else f"first champion of '{name}': checks passed"
        return d
    mismatch = [k for k in ("task", "labels") if champion["meta"].get(k) != challenger["meta"].get(k)]
    if mismatch:
        d.update(promoted=False, reason=f"champion and challenger differ in {', '.join(mismatch)}: they cannot "
                                        f"be scored on the same data; move the alias with `ftflow rollback "
                                        f"{name} --to {challenger['version']}` if this change is intended")
        return d
    d["champion_score"] = champ = score_bundle(champion["bundle"], df)[metric]
    chal = d["challenger_score"]
    wins = beats(chal, champ, margin, better_high)
    sign = "+" if better_high else "-"
    comparison = (f"{metric} {chal:.4f} {'>=' if better_high else '<='} {champ:.4f} {sign} margin {margin:g}"
                  if wins else f"{metric} {chal:.4f} does not beat champion {champ:.4f} by margin {margin:g}")
    if not wins:
        reasons.append(comparison)
    d["promoted"] = not reasons
    d["reason"] = comparison if d["promoted"] else "; ".join(reasons)
    return d


def promote_challenger(name: str, margin: float | None = None, eval_data: str | None = None,
                       extra_tags: dict | None = None, version: str | None = None,
                       allow_data_warnings: bool | None = None, break_lock: bool = False) -> dict:
    """Gate `version` (default: the challenger's, read once) against the champion; move `champion` if it passes.

    Raises PromotionBusy when another promotion of the model runs. The decision is recorded
    before the alias moves and finalised after.
    """
    version = str(version) if version is not None else challenger_version(name)
    with promotion_lock(name, f"promote version {version}", break_lock):
        with tempfile.TemporaryDirectory(prefix="ftflow-promote-") as tmp:
            work = Path(tmp)
            challenger = load_version(name, version, work, "candidate")
            champion = load_candidate(name, register.CHAMPION, work)
            df, source = read_eval_frame(eval_data, challenger["run_id"], work)
            task, labels = challenger["meta"]["task"], challenger["meta"]["labels"]
            if task in ("classification", "pair_classification") and "label" in df.columns:
                df["label"] = labels_as_strings(df["label"], labels)  # read like training data: 1.0 -> "1"
            check_columns(df, task, source, labels)
            margin = default_margin(challenger["run_id"]) if margin is None else float(margin)
            if allow_data_warnings is None:
                allow_data_warnings = default_allow_data_warnings(challenger["run_id"])
            d = decide(name, challenger, champion, df, margin, allow_data_warnings)
            apply_shadow_gate(d, name, champion, challenger)  # registry.min_shadow_answers; the shadow report
        before = champion["version"] if champion else None
        d.update(model_name=name, action="promote", challenger_version=version, champion_before=before,
                 eval_source=source, eval_rows=len(df), time=now_iso(),
                 same_data_digest=bool(champion) and champion["tags"].get("data_digest") ==
                 challenger["tags"].get("data_digest"))
        if d["promoted"]:
            now = champion_version(name)  # re-read: scoring took minutes
            if now != before:
                d.update(promoted=False, reason=f"the champion changed while scoring (version {before or 'none'} "
                                                f"then, {now or 'none'} now); nothing was moved. Run the "
                                                f"promotion again to score against the new champion")
                before = d["champion_before"] = now
        d.update(decision="promoted" if d["promoted"] else "refused",
                 champion_after=version if d["promoted"] else before)
        if not d["promoted"]:
            d["record_run_id"] = record_decision(d, extra_tags)
            return d
        d["record_run_id"] = move_champion(d, extra_tags)
    return d


def move_champion(d: dict, extra_tags: dict | None) -> str:
    """Record the decision as pending, move `champion`, finalise the record; return the record's run id.

    Written in this order so that a crash at any point leaves a record that says what was meant;
    `promotion_history` tells from the alias whether the move happened.
    """
    run_id = record_decision(d, extra_tags, state=PENDING)
    try:
        register.set_alias(d["model_name"], register.CHAMPION, d["champion_after"])
        if d["action"] == "promote":
            register.set_version_tags(d["model_name"], d["champion_after"], {"promoted_at": now_iso()})
    except BaseException as e:
        abort_decision(run_id, e)
        raise
    finalise_decision(run_id)
    return run_id


def champion_chain(history: list[dict]) -> list[str]:
    """The champions still standing behind each other, oldest first, from the log (oldest record first).

    A promotion stacks its version; a rollback to an older version drops the one it moved away
    from, and a move to a version already on the stack drops everything above it, so a version
    that was rolled back from is never rolled back to. A move --to a newer version (forward) stacks.
    """
    chain: list[str] = []
    for r in history:
        after = r["champion_after"]
        if r["decision"] not in ("promoted", "rolled back") or not after:
            continue
        before = r.get("champion_before")
        if r["decision"] == "rolled back" and before in chain and int(after) < int(before):
            chain.remove(before)  # rolled back from (to an older version): never the way back
        if after in chain:
            del chain[chain.index(after) + 1:]
        else:
            chain.append(after)
    return chain


def previous_champion(name: str, current: str) -> str:
    """The champion before `current` in the promotion log, else the newest version below it."""
    chain = champion_chain(promotion_history(name))
    if len(chain) > 1 and chain[-1] == current:
        return chain[-2]
    older = [v.version for v in register.list_versions(name) if int(v.version) < int(current)]
    if not older:
        raise ValueError(f"model '{name}': no version before the champion (version {current}) to roll back to; "
                         f"give one with --to VERSION")
    return str(older[-1])


def rollback_champion(name: str, to_version: str | None = None, extra_tags: dict | None = None,
                      break_lock: bool = False) -> dict:
    """Move `champion` back to an earlier version (the previous champion unless `to_version`); record it.

    The target's bundle is downloaded and answers one prediction before the alias moves: a
    rollback to a version that cannot serve is refused, with the champion left where it was.
    """
    with promotion_lock(name, "rollback", break_lock):
        current = champion_version(name)
        if current is None:
            raise ValueError(f"model '{name}' has no champion to roll back; promote one with `ftflow promote {name}`")
        target = str(to_version) if to_version is not None else previous_champion(name, current)
        mv = register.get_version(name, target)  # refuses unknown versions, listing the known ones
        if target == current:
            raise ValueError(f"version {target} of '{name}' is already champion; nothing to roll back")
        with tempfile.TemporaryDirectory(prefix="ftflow-rollback-") as tmp:
            try:
                check_bundle_answers(register.download_bundle(name, target, Path(tmp) / f"v{target}"))
            except Exception as e:  # whatever stops it from answering refuses the rollback
                raise ValueError(f"model '{name}' version {target} cannot serve ({type(e).__name__}: {e}); the "
                                 f"champion stays version {current}. Roll back to another version with "
                                 f"--to VERSION") from e
        now = champion_version(name)
        if now != current:
            raise ChampionMoved(f"model '{name}': the champion changed while the rollback checked version {target} "
                                f"(version {current} then, {now} now); nothing was moved. Run the rollback again")
        warnings = failed_checks(dict(mv.tags))
        reason = f"rolled back from version {current} to {target}; its bundle loaded and answered" + \
                 (f" (note: {'; '.join(warnings)})" if warnings else "")
        d = {"model_name": name, "action": "rollback", "decision": "rolled back", "challenger_version": target,
             "champion_before": current, "champion_after": target,
             "metric": None, "challenger_score": None, "champion_score": None, "margin": None,
             "eval_source": None, "eval_rows": None, "reason": reason, "time": now_iso()}
        d["record_run_id"] = move_champion(d, extra_tags)
    return d


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def record_decision(d: dict, extra_tags: dict | None = None, state: str = FINAL) -> str:
    """One run in the `promotions` experiment per decision; returns its id.

    state FINAL: the run ends FINISHED here. PENDING: it stays open until `finalise_decision`
    (or `abort_decision`); the alias moves in between.
    """
    tags = {"model_name": d["model_name"], "action": d["action"], "decision": d["decision"], "state": state,
            "challenger_version": d["challenger_version"], "champion_before": d["champion_before"] or "",
            "champion_after": d["champion_after"] or "", "reason": d["reason"][:5000],
            "metric": d["metric"] or "", "eval_source": d["eval_source"] or "", **(extra_tags or {})}
    run_name = f"{d['model_name']}-{d['action']}-v{d['challenger_version']}-{d['decision'].replace(' ', '-')}"
    run_id = tracking.start_run(PROMOTIONS_EXPERIMENT, run_name, tags={k: str(v) for k, v in tags.items()})
    # A decision whose record could not be written ends FAILED, so the log never shows half a record as done.
    try:
        tracking.log_params(run_id, {"margin": d["margin"], "metric": d["metric"], "eval_source": d["eval_source"],
                                     "eval_rows": d["eval_rows"]})
        tracking.log_metrics(run_id, {k: d[k] for k in ("challenger_score", "champion_score", "margin",
                                                        "eval_rows") if d.get(k) is not None}
                             | {"promoted": float(d["decision"] != "refused")})
        tracking.log_text(run_id, json.dumps(d, indent=2, default=str), "decision.json")
    except BaseException:
        tracking.end_run(run_id, "FAILED")
        raise
    if state == FINAL:
        tracking.end_run(run_id, "FINISHED")
    return run_id


def finalise_decision(run_id: str) -> None:
    """Mark a pending decision record as done (the alias has moved)."""
    tracking.set_tags(run_id, {"state": FINAL})
    tracking.end_run(run_id, "FINISHED")


def abort_decision(run_id: str, error: BaseException) -> None:
    """Mark a pending decision record as failed while moving the alias; best effort (the store may be down)."""
    with contextlib.suppress(Exception):
        tracking.set_tags(run_id, {"state": ABORTED, "error": f"{type(error).__name__}: {error}"[:5000]})
        tracking.end_run(run_id, "FAILED")


def resolve_unfinished(rows: list[dict], current_champion: str | None) -> list[dict]:
    """Read records left pending or aborted by what happened to the alias; final records pass unchanged.

    The alias moved iff the next finished record found the champion at the record's target
    (each decision reads the live champion), or, with none after it, the champion is there now.
    A move that happened keeps its decision; one that did not reads "not applied", with the
    champion unchanged, so the chain of champions (and a rollback's target) stays right.
    """
    out = []
    for i, r in enumerate(rows):
        if r["state"] == FINAL or r["decision"] == "refused":
            out.append(r)
            continue
        later = next((x for x in rows[i + 1:] if x["state"] == FINAL), None)
        seen = later["champion_before"] if later else current_champion
        moved = r["champion_after"] is not None and seen == r["champion_after"]
        if moved:
            out.append({**r, "reason": f"{r['reason']} (record not finalised; the alias did move)"})
        else:
            out.append({**r, "decision": "not applied", "champion_after": r["champion_before"],
                        "reason": f"did not complete, champion unchanged (was: {r['reason']})"})
    return out


def promotion_history(name: str) -> list[dict]:
    """The promotion log of a model, oldest first: one row per promotion decision or rollback."""
    runs = tracking.find_runs(PROMOTIONS_EXPERIMENT, f"tags.model_name = {tracking.filter_value(name)}",
                              order_by=["attributes.start_time ASC"])
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        rows.append({
            "time": dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
            "action": t.get("action"), "decision": t.get("decision"),
            "state": t.get("state", FINAL if r.info.status == "FINISHED" else ABORTED),
            "version": t.get("challenger_version"), "champion_before": t.get("champion_before") or None,
            "champion_after": t.get("champion_after") or None, "metric": t.get("metric") or None,
            "challenger_score": m.get("challenger_score"), "champion_score": m.get("champion_score"),
            "margin": m.get("margin"), "reason": t.get("reason"), "run_id": r.info.run_id,
        })
    if any(r["state"] != FINAL for r in rows):
        rows = resolve_unfinished(rows, champion_version(name))
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


HISTORY_COLUMNS = ("time", "action", "decision", "version", "champion_before", "champion_after", "metric",
                   "challenger_score", "champion_score", "margin", "reason")


def history_table(rows: list[dict], markdown: bool = False) -> str:
    """The promotion log as an aligned text table (or a markdown table)."""
    cells = [[_fmt(r.get(c)) for c in HISTORY_COLUMNS] for r in rows]
    if markdown:
        head = "| " + " | ".join(HISTORY_COLUMNS) + " |\n|" + "---|" * len(HISTORY_COLUMNS)
        return head + "".join("\n| " + " | ".join(c) + " |" for c in cells)
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HISTORY_COLUMNS)]
    widths[-1] = len(HISTORY_COLUMNS[-1])  # the reason runs free at the end
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HISTORY_COLUMNS), line(["-" * w for w in widths])] + [line(c) for c in cells])


def decision_markdown(d: dict) -> str:
    """A decision as the Prefect artifact shows it."""
    head = {"promoted": "promoted to champion", "refused": "refused", "rolled back": "rolled back"}[d["decision"]]
    lines = [f"# {d['model_name']}: version {d['challenger_version']} {head}", "", f"**Why:** {d['reason']}", "",
             "| | value |", "|---|---|",
             f"| champion before | {_fmt(d['champion_before'])} |", f"| champion after | {_fmt(d['champion_after'])} |"]
    if d.get("metric"):
        lines += [f"| metric | {d['metric']} ({'higher' if d['greater_is_better'] else 'lower'} is better) |",
                  f"| challenger score | {_fmt(d['challenger_score'])} |",
                  f"| champion score | {_fmt(d['champion_score'])} |", f"| margin | {_fmt(d['margin'])} |",
                  f"| scored on | {d['eval_source']} ({d['eval_rows']} rows) |"]
    lines += ["", f"MLflow run `{d['record_run_id']}` in experiment `{PROMOTIONS_EXPERIMENT}`"]
    return "\n".join(lines)
