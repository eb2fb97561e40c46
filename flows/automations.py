"""The retrain-on-drift loop as Prefect events and an automation (no scheduler of our own).

The monitor flow emits RETRAIN_EVENT for resource `ftflow.model.<name>` with the reason in its
payload; the automation made here runs the retrain deployment with that reason as a parameter.
"""

from __future__ import annotations

RETRAIN_EVENT = "ftflow.monitor.retrain-requested"
RETRAIN_DEPLOYMENT = "retrain/on-drift"


def model_resource(model_name: str) -> dict[str, str]:
    """The Prefect event resource naming a registered model."""
    return {"prefect.resource.id": f"ftflow.model.{model_name}", "prefect.resource.name": model_name}


def automation_name(model_name: str) -> str:
    return f"retrain-{model_name}-on-drift"


def emit_retrain_event(model_name: str, reason: str, details: dict | None = None):
    """Ask for a retrain of `model_name`; the automation of `ftflow up` answers it. Returns the event (None if unsent)."""
    # heavy (prefect): loaded when this runs, so importing flows.automations stays light
    from prefect.events import emit_event

    return emit_event(
        RETRAIN_EVENT,
        resource=model_resource(model_name),
        payload={"reason": reason, "model_name": model_name, **(details or {})},
    )


def retrain_automation(model_name: str, deployment_id):
    """An automation: on RETRAIN_EVENT for this model, run the deployment with the event's reason."""
    # heavy (prefect): loaded when this runs, so importing flows.automations stays light
    from prefect.automations import AutomationCore, EventTrigger, RunDeployment

    reason = {"__prefect_kind": "jinja", "template": "{{ event.payload.reason }}"}
    return AutomationCore(
        name=automation_name(model_name),
        description=f"Retrain {model_name} (fine-tune with feedback, then the promotion gate) when its monitor "
        f"finds drift or low feedback accuracy",
        trigger=EventTrigger(
            expect={RETRAIN_EVENT},
            match={"prefect.resource.id": model_resource(model_name)["prefect.resource.id"]},
            posture="Reactive",
            threshold=1,
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id, parameters={"reason": reason})],
    )


def ensure_retrain_automation(model_name: str, deployment_name: str = RETRAIN_DEPLOYMENT) -> str:
    """Create (or replace) the model's retrain automation on the current Prefect API; returns its id."""
    # heavy (prefect): loaded when this runs, so importing flows.automations stays light
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name)
        for old in client.read_automations_by_name(automation_name(model_name)):
            client.delete_automation(old.id)  # one per model: a restarted stack replaces, never duplicates
        return str(client.create_automation(retrain_automation(model_name, deployment.id)))
