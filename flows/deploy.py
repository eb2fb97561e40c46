"""The deploy flows: `promote` (gated challenger → champion) and `rollback`.

They only compose: the gate lives in tasks/registry/promote.py (handed the shadow verdict of
tasks/monitoring/shadow.py), the rollback in rollback.py, the decision records in decision.py. Each
decision is also shown as a Prefect markdown artifact; the serving process picks up a moved alias by itself.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from tasks.config import check_name
from tasks.platform import tracking
from tasks.registry.decision import PromotionDecision, promotion_history
from tasks.registry.decision_text import decision_markdown
from tasks.registry.promote import promote_challenger
from tasks.registry.rollback import rollback_champion


def _artifact_key(name: str) -> str:
    # Prefect keys: lowercase letters, numbers and dashes only.
    return "promotion-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")[:80]


def _publish(decision: PromotionDecision) -> None:
    create_markdown_artifact(
        decision_markdown(decision),
        key=_artifact_key(decision.model_name),
        description=f"{decision.model_name}: {decision.decision}",
    )
    get_run_logger().info(
        "%s: version %s %s: %s", decision.model_name, decision.challenger_version, decision.decision, decision.reason
    )


@flow(name="promote", log_prints=True)
def promote(
    model_name: str,
    version: str | None = None,
    margin: float | None = None,
    eval_data: str | None = None,
    allow_data_warnings: bool | None = None,
    break_lock: bool = False,
    allow_below_baseline: bool | None = None,
) -> PromotionDecision:
    """Re-score a version and the champion on the same held-out data; move 'champion' if the version wins.

    version: the model version to promote; default the one holding 'challenger' now (read once).
    margin: how much better the challenger must be on the primary metric; default the challenger's
    registry.promotion_margin. eval_data: a pinned evaluation set (parquet/csv/jsonl) instead of the
    challenger run's held-out split. allow_data_warnings: promote a version whose data passed only
    with warnings; default the challenger's registry.promote_with_data_warnings. allow_below_baseline:
    promote a version that did not beat the best baseline (tag beats_baseline=false); default the
    challenger's registry.allow_below_baseline. break_lock: clear
    the lock of a promotion whose process is gone. One promotion per model at a time: a second one
    is refused (PromotionBusy).
    """
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        # heavy (pyarrow via tasks.monitoring.shadow): loaded when this runs, so importing flows.deploy stays light
        from tasks.monitoring.shadow import check_shadow

        check_name(model_name, "model_name")
        tracking.configure()
        decision = promote_challenger(
            model_name,
            margin,
            eval_data,
            extra_tags={"prefect_flow_run_id": str(flow_run.get_id() or "")},
            version=version,
            allow_data_warnings=allow_data_warnings,
            break_lock=break_lock,
            shadow_gate=check_shadow,  # the challenger's shadow answers: monitoring's verdict, the gate's input
            allow_below_baseline=allow_below_baseline,
        )
        _publish(decision)
        return decision


@flow(name="rollback", log_prints=True)
def rollback(model_name: str, to_version: str | None = None, break_lock: bool = False) -> PromotionDecision:
    """Move 'champion' back to the previous champion, or to `to_version`, once its bundle answers; recorded."""
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        check_name(model_name, "model_name")
        tracking.configure()
        decision = rollback_champion(
            model_name,
            to_version,
            extra_tags={"prefect_flow_run_id": str(flow_run.get_id() or "")},
            break_lock=break_lock,
        )
        _publish(decision)
        return decision


def history(model_name: str) -> list[PromotionDecision]:
    """The promotion log of a model (oldest first), read from the MLflow `promotions` experiment."""
    return promotion_history(model_name)
