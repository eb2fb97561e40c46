"""Promote: re-score challenger and champion on the same held-out data, gate, move `champion`, record why.

The gate (every part must hold):
- the challenger's ONNX parity check passed, and its data validation passed (version tag
  `data_validation`; "warnings" refuses unless registry.promote_with_data_warnings allows it);
- the challenger beat the best cheap baseline on its test split (version tag `beats_baseline`;
  "false" refuses unless registry.allow_below_baseline allows it);
- there is no champion yet, or the challenger's primary metric beats the champion's by the
  margin on the SAME data (tasks/registry/holdout.py scores both with the ONNX file each serves).

A promotion (or rollback) is a transaction: one per model at a time (tasks/registry/lock.py);
the champion is re-read just before the alias moves and the move is refused if it changed;
the decision record is written first (state "pending"), then the alias moves, then the record
is finalised. A record left pending by a crash is read back by what the alias shows
(tasks/registry/decision.py).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.kinds import kind_of
from tasks.modelling.metrics import greater_is_better, primary_metric
from tasks.platform import tracking
from tasks.registry import register
from tasks.registry.decision import (
    PENDING,
    PROMOTED,
    REFUSED,
    PromotionDecision,
    abort_decision,
    champion_version,
    finalise_decision,
    now_iso,
    record_decision,
)
from tasks.registry.holdout import check_columns, load_candidate, load_version, read_eval_frame, score_bundle
from tasks.registry.lock import promotion_lock

MARGIN_PARAM = "registry.promotion_margin"  # the training run's config value, the default margin
WARNINGS_PARAM = "registry.promote_with_data_warnings"  # likewise, the default data-warnings policy
BELOW_BASELINE_PARAM = "registry.allow_below_baseline"  # likewise, the default below-baseline policy


@dataclass(frozen=True)
class GateVerdict:
    """What the gate found: the answer, why, and the scores it compared (nothing is moved by it)."""

    promoted: bool
    reason: str
    metric: str
    greater_is_better: bool
    margin: float
    challenger_score: float | None = None
    champion_score: float | None = None


@dataclass(frozen=True)
class ShadowGate:
    """What real traffic says about a promotion: the shadow report, and a refusal when too few answers."""

    report: dict | None = None  # ShadowReport's fields
    refusal: str | None = None  # why the gate refuses (too few shadow answers, an unreadable log)
    note: str | None = None  # the report's one-line summary, for the decision's reason


# The caller's shadow gate, asked under the promotion lock once both versions are loaded:
# (model name, champion or None, challenger) -> its verdict (tasks.monitoring.shadow.check_shadow).
ShadowCheck = Callable[[str, dict | None, dict], ShadowGate]


def challenger_version(name: str) -> str:
    """The version `challenger` points at now; the error says how to make one."""
    mv = register.version_by_alias(name, register.CHALLENGER)
    if mv is None:
        known = [v.version for v in register.list_versions(name)]
        raise ValueError(
            f"model '{name}' has no version with alias '{register.CHALLENGER}' "
            f"(versions: {known or 'none'}); train one with `ftflow run CONFIG` whose "
            f"registry.model_name is '{name}'"
        )
    return str(mv.version)


def failed_checks(tags: dict, allow_data_warnings: bool = False, allow_below_baseline: bool = False) -> list[str]:
    """The required checks a version's tags do not show as passed (data warnings and a model below its
    baseline fail unless allowed)."""
    failed = []
    if tags.get(register.BEATS_BASELINE_TAG) == "false" and not allow_below_baseline:
        failed.append(
            f"the model did not beat the best baseline ({tags.get('best_baseline', '?')}, test score "
            f"{tags.get('best_baseline_score', '?')}; difference interval {tags.get('baseline_difference_interval', '?')}"
            f"; tag {register.BEATS_BASELINE_TAG}=false): serving it would be worse than a bag of words or as good at "
            f"best; set registry.allow_below_baseline=true or pass --allow-below-baseline to promote it anyway"
        )
    if str(tags.get(register.PARITY_TAG)).lower() != "true":
        failed.append(
            f"ONNX parity check did not pass (tag {register.PARITY_TAG}={tags.get(register.PARITY_TAG, 'missing')})"
        )
    status = tags.get(register.DATA_VALIDATION_TAG)
    if status is None:
        failed.append(
            f"data validation result missing (no tag {register.DATA_VALIDATION_TAG}); register the "
            f"version through `ftflow run`, which validates its data"
        )
    elif status == "warnings" and not allow_data_warnings:
        failed.append(
            f"data validation passed only with {tags.get(register.DATA_WARNINGS_TAG, '?')} warning(s) "
            f"(tag {register.DATA_VALIDATION_TAG}=warnings; see the run's data/validation/summary.md); "
            f"set registry.promote_with_data_warnings=true or pass --allow-data-warnings to accept them"
        )
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


def default_allow_below_baseline(challenger_run_id: str) -> bool:
    """The challenger config's registry.allow_below_baseline, else False."""
    return str(tracking.run_params(challenger_run_id).get(BELOW_BASELINE_PARAM, "False")).lower() == "true"


def decide(
    name: str,
    challenger: dict,
    champion: dict | None,
    df: pd.DataFrame,
    margin: float,
    allow_data_warnings: bool = False,
    allow_below_baseline: bool = False,
) -> GateVerdict:
    """Score both on `df` and apply the gate (nothing is moved here)."""
    metric = primary_metric(challenger["meta"]["task"])
    verdict = GateVerdict(False, "", metric, greater_is_better(metric), margin)
    if champion is not None and champion["version"] == challenger["version"]:
        return dataclasses.replace(
            verdict, reason=f"version {challenger['version']} is already champion; train a new challenger first"
        )
    chal = score_bundle(challenger["bundle"], df)[metric]
    reasons = failed_checks(challenger["tags"], allow_data_warnings, allow_below_baseline)
    if champion is None:
        return dataclasses.replace(
            verdict,
            promoted=not reasons,
            challenger_score=chal,
            reason="; ".join(reasons) if reasons else f"first champion of '{name}': checks passed",
        )
    mismatch = [k for k in ("task", "labels") if champion["meta"].get(k) != challenger["meta"].get(k)]
    if mismatch:
        return dataclasses.replace(
            verdict,
            challenger_score=chal,
            reason=f"champion and challenger differ in {', '.join(mismatch)}: they cannot be scored on the same "
            f"data; move the alias with `ftflow rollback {name} --to {challenger['version']}` if this "
            f"change is intended",
        )
    champ = score_bundle(champion["bundle"], df)[metric]
    better_high = verdict.greater_is_better
    wins = beats(chal, champ, margin, better_high)
    sign = "+" if better_high else "-"
    comparison = (
        f"{metric} {chal:.4f} {'>=' if better_high else '<='} {champ:.4f} {sign} margin {margin:g}"
        if wins
        else f"{metric} {chal:.4f} does not beat champion {champ:.4f} by margin {margin:g}"
    )
    if not wins:
        reasons.append(comparison)
    return dataclasses.replace(
        verdict,
        promoted=not reasons,
        reason="; ".join(reasons) if reasons else comparison,
        challenger_score=chal,
        champion_score=champ,
    )


def promote_challenger(
    name: str,
    margin: float | None = None,
    eval_data: str | None = None,
    extra_tags: dict | None = None,
    version: str | None = None,
    allow_data_warnings: bool | None = None,
    break_lock: bool = False,
    allow_below_baseline: bool | None = None,
    *,
    shadow_gate: ShadowCheck,
) -> PromotionDecision:
    """Gate `version` (default: the challenger's, read once) against the champion; move `champion` if it passes.

    Raises PromotionBusy when another promotion of the model runs. The decision is recorded
    before the alias moves and finalised after. `shadow_gate` is the caller's verdict on the
    challenger's shadow answers (flows/deploy.py passes tasks.monitoring.shadow.check_shadow).
    """
    version = str(version) if version is not None else challenger_version(name)
    with promotion_lock(name, f"promote version {version}", break_lock):
        with tempfile.TemporaryDirectory(prefix="ftflow-promote-") as tmp:
            work = Path(tmp)
            challenger = load_version(name, version, work, "candidate")
            champion = load_candidate(name, register.CHAMPION, work)
            df, source = read_eval_frame(eval_data, challenger["run_id"], work)
            task, labels = challenger["meta"]["task"], challenger["meta"]["labels"]
            if "label" in df.columns:  # read like training data: 1.0 -> "1"; lists, or JSON lists in a CSV
                df["label"] = kind_of(task).read_targets(df["label"], labels, origin=f"evaluation set {source}")
            check_columns(df, task, source, labels)
            margin = default_margin(challenger["run_id"]) if margin is None else float(margin)
            if allow_data_warnings is None:
                allow_data_warnings = default_allow_data_warnings(challenger["run_id"])
            if allow_below_baseline is None:
                allow_below_baseline = default_allow_below_baseline(challenger["run_id"])
            verdict = decide(name, challenger, champion, df, margin, allow_data_warnings, allow_below_baseline)
            shadow = shadow_gate(name, champion, challenger)  # registry.min_shadow_answers; the shadow report
        before = champion["version"] if champion else None
        promoted, reason = verdict.promoted, verdict.reason
        if shadow.refusal:
            promoted, reason = False, f"{reason}; {shadow.refusal}"
        elif shadow.note:
            reason = f"{reason}; {shadow.note}"
        if promoted:
            now = champion_version(name)  # re-read: scoring took minutes
            if now != before:
                promoted, reason = (
                    False,
                    (
                        f"the champion changed while scoring (version {before or 'none'} then, "
                        f"{now or 'none'} now); nothing was moved. Run the promotion again to "
                        f"score against the new champion"
                    ),
                )
                before = now
        d = PromotionDecision(
            model_name=name,
            action="promote",
            decision=PROMOTED if promoted else REFUSED,
            challenger_version=version,
            champion_before=before,
            champion_after=version if promoted else before,
            reason=reason,
            time=now_iso(),
            metric=verdict.metric,
            greater_is_better=verdict.greater_is_better,
            margin=verdict.margin,
            challenger_score=verdict.challenger_score,
            champion_score=verdict.champion_score,
            eval_source=source,
            eval_rows=len(df),
            shadow=shadow.report,
            same_data_digest=bool(
                champion and champion["tags"].get("data_digest") == challenger["tags"].get("data_digest")
            ),
        )
        run_id = move_champion(d, extra_tags) if promoted else record_decision(d, extra_tags)
    return dataclasses.replace(d, record_run_id=run_id)


def move_champion(d: PromotionDecision, extra_tags: dict | None) -> str:
    """Record the decision as pending, move `champion`, finalise the record; return the record's run id.

    Written in this order so that a crash at any point leaves a record that says what was meant;
    `promotion_history` tells from the alias whether the move happened.
    """
    assert d.champion_after is not None, "a move names the version that becomes champion"
    run_id = record_decision(d, extra_tags, state=PENDING)
    try:
        register.set_alias(d.model_name, register.CHAMPION, d.champion_after)
        if d.action == "promote":
            register.set_version_tags(d.model_name, d.champion_after, {"promoted_at": now_iso()})
    except BaseException as e:
        abort_decision(run_id, e)
        raise
    finalise_decision(run_id)
    return run_id
