"""The nightly retrain: the fine-tune flow, then the promotion gate, as two subflows.

Named `fine-tune` like the flow it wraps, so its deployment reads `fine-tune/nightly` next to
`fine-tune/manual` in the Prefect UI; the run name says `nightly-<config>`.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Cancelled, State

from flows.deploy import promote
from flows.guards import TrainingBusy, training_slot
from flows.training import fine_tune
from tasks.config import PipelineConfig
from tasks.platform import tracking


@flow(name="fine-tune", flow_run_name="nightly-{config.name}", log_prints=True)
def nightly(config: PipelineConfig = PipelineConfig()) -> dict | State:
    """Retrain on today's data, then promote the new challenger only if it beats the champion.

    One nightly or retrain of a model trains at a time (flows/guards.py): this run waits for another's end up
    to `registry.training_wait_minutes`, then ends Cancelled having trained nothing.
    """
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        try:
            with training_slot(config.registry.model_name, config.registry.training_wait_minutes):
                return train_then_promote(config)
        except TrainingBusy as busy:
            get_run_logger().warning("%s", busy)
            return Cancelled(message=str(busy))


def train_then_promote(config: PipelineConfig) -> dict:
    trained = fine_tune(config=config)
    if not trained.get("registered"):
        get_run_logger().warning("no model version was registered (export disabled?); nothing to promote")
        return {"fine_tune": trained, "promotion": None}
    # The version this run registered, never whatever holds 'challenger' by now (another run's, perhaps);
    # margin and held-out data: promote's defaults, i.e. this version's own config and test split.
    decision = promote(model_name=config.registry.model_name, version=trained["registered"]["version"])
    return {"fine_tune": trained, "promotion": decision}
