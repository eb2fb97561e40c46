"""Promote: re-score challenger and champion on the same held-out data, gate, move `champion`, log why.

The gate (every part must hold):
- the challenger's ONNX parity check passed and its data validation passed (version tags);
- there is no champion yet, or the challenger's primary metric beats the champion's by the
  margin on the SAME data: the challenger run's held-out split (`data/test.parquet` artifact)
  or a pinned evaluation set. Stored metrics are never compared: each model is re-scored,
  with the ONNX file it serves.

Every decision, and every rollback, becomes a run in the MLflow experiment `promotions`
(tags say what happened and why, metrics hold both scores); `promotion_history` reads them back.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import pandas as pd

from tasks import register, tracking
from tasks.collect import labels_as_strings
from tasks.io import read_frame, read_json
from tasks.monitoring.shadow import apply_shadow_gate

PROMOTIONS_EXPERIMENT = "promotions"
HELD_OUT_ARTIFACT = "data/test.parquet"
REQUIRED_TAGS = {"parity_passed": "ONNX parity check", "data_validation_passed": "data validation"}
MARGIN_PARAM = "registry.promotion_margin"  # the training run's config value, the default margin


def load_candidate(name: str, alias: str, workdir: Path) -> dict | None:
    """The version holding `alias` with its serving bundle downloaded, or None when the alias is unset."""
    mv = register.version_by_alias(name, alias)
    if mv is None:
        return None
    bundle = register.download_bundle(name, mv.version, workdir / f"{alias}-v{mv.version}")
    return {"version": str(mv.version), "run_id": mv.run_id, "tags": dict(mv.tags), "bundle": bundle,
            "meta": read_json(bundle / "finetune_flow.json")}


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
    from tasks.predict import metrics_of

    return metrics_of(OnnxPredictor(bundle).predict_frame(df), df)


def failed_checks(tags: dict) -> list[str]:
    """The required checks a version's tags do not show as passed."""
    return [f"{what} did not pass (tag {tag}={tags.get(tag, 'missing')})"
            for tag, what in REQUIRED_TAGS.items() if str(tags.get(tag)).lower() != "true"]


def beats(challenger: float, champion: float, margin: float, greater_is_better: bool) -> bool:
    """True when the challenger is at least `margin` better (higher, or lower for errors)."""
    return challenger >= champion + margin if greater_is_better else challenger <= champion - margin


def default_margin(challenger_run_id: str) -> float:
    """The margin the challenger's config asked for (registry.promotion_margin), else 0."""
    try:
        return float(tracking.run_params(challenger_run_id).get(MARGIN_PARAM, 0.0))
    except (ValueError, TypeError):
        return 0.0


def decide(name: str, challenger: dict, champion: dict | None, df: pd.DataFrame, margin: float) -> dict:
    """Score both on `df` and apply the gate; returns the decision (nothing is moved here)."""
    from tasks.metrics import greater_is_better, primary_metric

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
    reasons = failed_checks(challenger["tags"])
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
                       extra_tags: dict | None = None) -> dict:
    """Gate the challenger against the champion; move `champion` when it passes; record the decision."""
    with tempfile.TemporaryDirectory(prefix="ftflow-promote-") as tmp:
        work = Path(tmp)
        challenger = load_candidate(name, register.CHALLENGER, work)
        if challenger is None:
            known = [v.version for v in register.list_versions(name)]
            raise ValueError(f"model '{name}' has no version with alias '{register.CHALLENGER}' "
                             f"(versions: {known or 'none'}); train one with `ftflow run CONFIG` whose "
                             f"registry.model_name is '{name}'")
        champion = load_candidate(name, register.CHAMPION, work)
        df, source = read_eval_frame(eval_data, challenger["run_id"], work)
        task, labels = challenger["meta"]["task"], challenger["meta"]["labels"]
        if task in ("classification", "pair_classification") and "label" in df.columns:
            df["label"] = labels_as_strings(df["label"], labels)  # read like training data: 1.0 -> "1"
        check_columns(df, task, source, labels)
        margin = default_margin(challenger["run_id"]) if margin is None else float(margin)
        d = decide(name, challenger, champion, df, margin)
        apply_shadow_gate(d, name, champion, challenger)  # registry.min_shadow_answers; the shadow report
    before = champion["version"] if champion else None
    if d["promoted"]:
        register.set_alias(name, register.CHAMPION, challenger["version"])
        register.set_version_tags(name, challenger["version"], {"promoted_at": now_iso()})
    d.update(model_name=name, action="promote", decision="promoted" if d["promoted"] else "refused",
             challenger_version=challenger["version"], champion_before=before,
             champion_after=challenger["version"] if d["promoted"] else before,
             eval_source=source, eval_rows=len(df), time=now_iso(),
             same_data_digest=bool(champion) and champion["tags"].get("data_digest") ==
             challenger["tags"].get("data_digest"))
    d["record_run_id"] = record_decision(d, extra_tags)
    return d


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


def rollback_champion(name: str, to_version: str | None = None, extra_tags: dict | None = None) -> dict:
    """Move `champion` back to an earlier version (the previous champion unless `to_version`); record it."""
    current = register.version_by_alias(name, register.CHAMPION)
    if current is None:
        raise ValueError(f"model '{name}' has no champion to roll back; promote one with `ftflow promote {name}`")
    current = str(current.version)
    target = str(to_version) if to_version is not None else previous_champion(name, current)
    mv = register.get_version(name, target)  # refuses unknown versions, listing the known ones
    if target == current:
        raise ValueError(f"version {target} of '{name}' is already champion; nothing to roll back")
    register.set_alias(name, register.CHAMPION, target)
    warnings = failed_checks(dict(mv.tags))
    reason = f"rolled back from version {current} to {target}" + \
             (f" (note: {'; '.join(warnings)})" if warnings else "")
    d = {"model_name": name, "action": "rollback", "decision": "rolled back", "challenger_version": target,
         "champion_before": current, "champion_after": target,
         "metric": None, "challenger_score": None, "champion_score": None, "margin": None,
         "eval_source": None, "eval_rows": None, "reason": reason, "time": now_iso()}
    d["record_run_id"] = record_decision(d, extra_tags)
    return d


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def record_decision(d: dict, extra_tags: dict | None = None) -> str:
    """One finished run in the `promotions` experiment per decision; returns its id."""
    tags = {"model_name": d["model_name"], "action": d["action"], "decision": d["decision"],
            "challenger_version": d["challenger_version"], "champion_before": d["champion_before"] or "",
            "champion_after": d["champion_after"] or "", "reason": d["reason"][:5000],
            "metric": d["metric"] or "", "eval_source": d["eval_source"] or "", **(extra_tags or {})}
    run_name = f"{d['model_name']}-{d['action']}-v{d['challenger_version']}-{d['decision'].replace(' ', '-')}"
    run_id = tracking.start_run(PROMOTIONS_EXPERIMENT, run_name, tags={k: str(v) for k, v in tags.items()})
    # A decision whose record could not be written ends FAILED, so the log never shows half a record as done.
    with tracking.ended_run(run_id):
        tracking.log_params(run_id, {"margin": d["margin"], "metric": d["metric"], "eval_source": d["eval_source"],
                                     "eval_rows": d["eval_rows"]})
        tracking.log_metrics(run_id, {k: d[k] for k in ("challenger_score", "champion_score", "margin",
                                                        "eval_rows") if d.get(k) is not None}
                             | {"promoted": float(d["decision"] != "refused")})
        tracking.log_text(run_id, json.dumps(d, indent=2, default=str), "decision.json")
    return run_id


def promotion_history(name: str) -> list[dict]:
    """The promotion log of a model, oldest first: one row per promotion decision or rollback."""
    runs = tracking.find_runs(PROMOTIONS_EXPERIMENT, f"tags.model_name = '{name}'",
                              order_by=["attributes.start_time ASC"])
    rows = []
    for r in runs:
        t, m = r.data.tags, r.data.metrics
        rows.append({
            "time": dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.timezone.utc).isoformat(timespec="seconds"),
            "action": t.get("action"), "decision": t.get("decision"),
            "version": t.get("challenger_version"), "champion_before": t.get("champion_before") or None,
            "champion_after": t.get("champion_after") or None, "metric": t.get("metric") or None,
            "challenger_score": m.get("challenger_score"), "champion_score": m.get("champion_score"),
            "margin": m.get("margin"), "reason": t.get("reason"), "run_id": r.info.run_id,
        })
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
