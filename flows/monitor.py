"""The `monitor` flow: drift and feedback accuracy of a served model; asks for a retrain through a Prefect event.

The statistics and the MLflow run live in tasks/monitoring/monitor.py; this flow publishes the verdict
as a Prefect artifact and, when a retrain is needed, emits the event the `ftflow up` automation answers.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.automations import emit_retrain_event
from tasks.config import MonitoringConfig
from tasks.platform import tracking


def _artifact_key(name: str) -> str:
    # Prefect keys: lowercase letters, numbers and dashes only.
    return "monitor-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")[:80]


@flow(name="monitor", flow_run_name="monitor-{model_name}", log_prints=True)
def monitor(model_name: str, monitoring: MonitoringConfig = MonitoringConfig()) -> dict:
    """Compare the last window of logged traffic with the champion's data; emit the retrain event on drift."""
    with tracking.masked_errors():  # the state message and the CLI line show no credential
        # heavy (numpy, pandas via tasks.monitoring.monitor): loaded when this runs, so importing flows.monitor stays light
        from tasks.monitoring.monitor import monitor_model
        from tasks.monitoring.report import report_markdown

        tracking.configure()
        result = monitor_model(model_name, monitoring, extra_tags={"prefect_flow_run_id": str(flow_run.get_id() or "")})
        create_markdown_artifact(
            report_markdown(result), key=_artifact_key(model_name), description=f"{model_name}: {result['status']}"
        )
        logger = get_run_logger()
        logger.info(
            "%s: %s on %d rows%s",
            model_name,
            result["status"],
            result["rows"],
            f" ({'; '.join(result['reasons'])})" if result["reasons"] else "",
        )
        if result["retrain"]:
            event = emit_retrain_event(model_name, "; ".join(result["reasons"]), {"monitor_run_id": result["run_id"]})
            result["event_id"] = str(event.id) if event else None
            logger.info("retrain requested (event %s)", result["event_id"])
        return result
