"""The retrain the monitor asks for: fine-tune on the data plus the served predictions' feedback, then the gate.

`ftflow up` creates an automation that runs the `retrain/on-drift` deployment when the monitor emits
its retrain event; the event's reason becomes this flow's `reason` parameter (shown on the flow run)
and the `retrain_reason` tag of the training run in MLflow.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Cancelled, State

from flows.guards import TrainingBusy, cooldown_refusal, mark_retrain, training_slot
from flows.nightly import nightly
from tasks.config import PipelineConfig, SourceConfig
from tasks.platform import tracking


def with_feedback(config: PipelineConfig) -> PipelineConfig:
    """The config with the feedback of its registered model among the sources (unless it is already there)."""
    data = config.data
    if any(s.kind == "feedback" for s in [data.source, *data.extra_sources]):
        return config
    feedback = SourceConfig(kind="feedback", name=None, model_name=config.registry.model_name)
    return config.model_copy(
        update={"data": data.model_copy(update={"extra_sources": [*data.extra_sources, feedback]})}
    )


@flow(name="retrain", flow_run_name="retrain-{config.name}", log_prints=True)
def retrain(config: PipelineConfig = PipelineConfig(), reason: str = "manual", force: bool = False) -> dict | State:
    """Fine-tune including the feedback rows, then the promotion gate; `reason` says why (the monitor's finding).

    Refused (Cancelled, naming when it may run) within `monitoring.retrain_cooldown_hours` of the model's last
    retrain unless `force`; waits for a nightly or retrain of the same model that trains now (flows/guards.py).
    """
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        logger = get_run_logger()
        model_name, cooldown = config.registry.model_name, config.monitoring.retrain_cooldown_hours
        logger.info("retraining %s because: %s", model_name, reason)

        def refusal() -> str | None:
            return None if force else cooldown_refusal(model_name, cooldown)

        # Asked before waiting for the slot, so a refused retrain does not wait first; asked again with the slot
        # held, where no other retrain can pass it at the same moment.
        why_not = refusal()
        if why_not is None:
            try:
                with training_slot(model_name, config.registry.training_wait_minutes):
                    why_not = refusal()
                    if why_not is None:
                        mark_retrain(model_name)
                        result = nightly(config=with_feedback(config))
            except TrainingBusy as busy:
                why_not = str(busy)
        if why_not is not None:
            logger.warning("%s", why_not)
            return Cancelled(message=why_not)
        if force:
            logger.info("forced: the retrain cooldown (%g hours) was not asked", cooldown)
        if not isinstance(result, dict):  # nightly's own state: it shares this run's slot, so never busy
            return result
        tracking.set_tags(result["fine_tune"]["run_id"], {"retrain_reason": reason[:5000]})
        return {**result, "reason": reason}
