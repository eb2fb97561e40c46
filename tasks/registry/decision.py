"""The promotion decision: one frozen record per promotion or rollback, its MLflow run, the log read back.

Every decision, and every rollback, becomes a run in the MLflow experiment `promotions` (tags say
what happened and why, metrics hold both scores); `promotion_history` reads them back into the same
`PromotionDecision`. The tag, param and metric names are the store's format: histories written by
earlier versions read unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass

from tasks.platform import tracking
from tasks.registry import register

PROMOTIONS_EXPERIMENT = "promotions"
# A decision record's `state` tag: written "pending" before the alias moves, "final" after;
# "aborted" when the move failed in-process. Records without the tag (older) are final.
PENDING, FINAL, ABORTED = "pending", "final", "aborted"
# What a decision says happened: the gate's two answers, a rollback, and a move read back as never made.
PROMOTED, REFUSED, ROLLED_BACK, NOT_APPLIED = "promoted", "refused", "rolled back", "not applied"


@dataclass(frozen=True)
class PromotionDecision:
    """What one promotion or rollback of a model decided, with the numbers it decided on."""

    model_name: str
    action: str  # "promote" or "rollback"
    decision: str  # PROMOTED, REFUSED, ROLLED_BACK; NOT_APPLIED when read back from an unfinished record
    challenger_version: str  # the version promoted (or refused), or a rollback's target
    champion_before: str | None
    champion_after: str | None
    reason: str
    time: str
    metric: str | None = None  # the primary metric both models were scored on; None when nothing was scored
    greater_is_better: bool | None = None
    margin: float | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    eval_source: str | None = None
    eval_rows: int | None = None
    same_data_digest: bool | None = None  # both versions were trained on data with the same digest
    shadow: dict | None = None  # the challenger on real traffic (tasks/monitoring/shadow.ShadowReport's fields)
    state: str = FINAL
    record_run_id: str | None = None  # the decision's run in the `promotions` experiment

    @property
    def promoted(self) -> bool:
        """True when the gate moved `champion` to the challenger."""
        return self.decision == PROMOTED


def now_iso() -> str:
    """The current UTC time, to the second, as decisions and locks record it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def champion_version(name: str) -> str | None:
    """The version `champion` points at now (read from the registry), or None."""
    mv = register.version_by_alias(name, register.CHAMPION)
    return None if mv is None else str(mv.version)


def record_decision(d: PromotionDecision, extra_tags: dict | None = None, state: str = FINAL) -> str:
    """One run in the `promotions` experiment per decision; returns its id.

    state FINAL: the run ends FINISHED here. PENDING: it stays open until `finalise_decision`
    (or `abort_decision`); the alias moves in between.
    """
    tags = {
        "model_name": d.model_name,
        "action": d.action,
        "decision": d.decision,
        "state": state,
        "challenger_version": d.challenger_version,
        "champion_before": d.champion_before or "",
        "champion_after": d.champion_after or "",
        "reason": d.reason[:5000],
        "metric": d.metric or "",
        "eval_source": d.eval_source or "",
        **(extra_tags or {}),
    }
    run_name = f"{d.model_name}-{d.action}-v{d.challenger_version}-{d.decision.replace(' ', '-')}"
    run_id = tracking.start_run(PROMOTIONS_EXPERIMENT, run_name, tags={k: str(v) for k, v in tags.items()})
    # A decision whose record could not be written ends FAILED, so the log never shows half a record as done.
    try:
        tracking.log_params(
            run_id, {"margin": d.margin, "metric": d.metric, "eval_source": d.eval_source, "eval_rows": d.eval_rows}
        )
        scores = {k: getattr(d, k) for k in ("challenger_score", "champion_score", "margin", "eval_rows")}
        tracking.log_metrics(
            run_id, {k: v for k, v in scores.items() if v is not None} | {"promoted": float(d.decision != REFUSED)}
        )
        record = dataclasses.asdict(dataclasses.replace(d, state=state)) | {"promoted": d.promoted}
        tracking.log_text(run_id, json.dumps(record, indent=2, default=str), "decision.json")
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


def decision_from_run(run) -> PromotionDecision:
    """A decision as its MLflow run in `promotions` recorded it (tags, metrics, params)."""
    t, m, p = run.data.tags, run.data.metrics, run.data.params
    rows = p.get("eval_rows")
    return PromotionDecision(
        model_name=t.get("model_name", ""),
        action=t.get("action", ""),
        decision=t.get("decision", ""),
        challenger_version=t.get("challenger_version", ""),
        champion_before=t.get("champion_before") or None,
        champion_after=t.get("champion_after") or None,
        reason=t.get("reason", ""),
        time=dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.UTC).isoformat(timespec="seconds"),
        metric=t.get("metric") or None,
        margin=m.get("margin"),
        challenger_score=m.get("challenger_score"),
        champion_score=m.get("champion_score"),
        eval_source=t.get("eval_source") or None,
        eval_rows=int(rows) if rows and rows.isdigit() else None,
        state=t.get("state", FINAL if run.info.status == "FINISHED" else ABORTED),
        record_run_id=run.info.run_id,
    )


def resolve_unfinished(rows: list[PromotionDecision], current_champion: str | None) -> list[PromotionDecision]:
    """Read records left pending or aborted by what happened to the alias; final records pass unchanged.

    The alias moved iff the next finished record found the champion at the record's target
    (each decision reads the live champion), or, with none after it, the champion is there now.
    A move that happened keeps its decision; one that did not reads "not applied", with the
    champion unchanged, so the chain of champions (and a rollback's target) stays right.
    """
    out = []
    for i, r in enumerate(rows):
        if r.state == FINAL or r.decision == REFUSED:
            out.append(r)
            continue
        later = next((x for x in rows[i + 1 :] if x.state == FINAL), None)
        seen = later.champion_before if later else current_champion
        moved = r.champion_after is not None and seen == r.champion_after
        if moved:
            out.append(dataclasses.replace(r, reason=f"{r.reason} (record not finalised; the alias did move)"))
        else:
            out.append(
                dataclasses.replace(
                    r,
                    decision=NOT_APPLIED,
                    champion_after=r.champion_before,
                    reason=f"did not complete, champion unchanged (was: {r.reason})",
                )
            )
    return out


def promotion_history(name: str) -> list[PromotionDecision]:
    """The promotion log of a model, oldest first: one decision per promotion or rollback."""
    runs = tracking.find_runs(
        PROMOTIONS_EXPERIMENT,
        f"tags.model_name = {tracking.filter_value(name)}",
        order_by=["attributes.start_time ASC"],
    )
    rows = [decision_from_run(r) for r in runs]
    if any(r.state != FINAL for r in rows):
        rows = resolve_unfinished(rows, champion_version(name))
    return rows
