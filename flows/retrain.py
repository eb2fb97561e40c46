"""The retrain the monitor asks for: fine-tune on the data plus the served predictions' feedback, then the gate.

`ftflow up` creates an automation that runs the `retrain/on-drift` deployment when the monitor emits
its retrain event; the event's reason becomes this flow's `reason` parameter (shown on the flow run)
and the `retrain_reason` tag of the training run in MLflow.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

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
def retrain(config: PipelineConfig = PipelineConfig(), reason: str = "manual") -> dict:
    """Fine-tune including the feedback rows, then the promotion gate; `reason` says why (the monitor's finding)."""
    get_run_logger().info("retraining %s because: %s", config.registry.model_name, reason)
    result = nightly(config=with_feedback(config))
    tracking.set_tags(result["fine_tune"]["run_id"], {"retrain_reason": reason[:5000]})
    return {**result, "reason": reason}
