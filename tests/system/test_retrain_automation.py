"""The retrain loop on a real Prefect server: `ftflow up`'s automation, fired by the monitor's event."""

from __future__ import annotations

import time

from flows.automations import RETRAIN_DEPLOYMENT, emit_retrain_event, ensure_retrain_automation
from flows.retrain import retrain, with_feedback
from tests.support import small_config


def wait_for_runs(client, deployment_id, timeout: float = 90.0) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        if runs:
            return runs
        time.sleep(1.0)
    return []


def test_the_monitor_event_runs_the_retrain_deployment_with_its_reason(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client

    cfg = small_config(tmp_path, "registry.model_name=loop-model")
    deployment = retrain.to_deployment(
        RETRAIN_DEPLOYMENT.split("/")[1], parameters={"config": cfg.model_dump(mode="json")}
    )
    deployment_id = deployment.apply()
    first = ensure_retrain_automation("loop-model")
    second = ensure_retrain_automation("loop-model")  # a restarted stack replaces it
    with get_client(sync_client=True) as client:
        assert [str(a.id) for a in client.read_automations_by_name("retrain-loop-model-on-drift")] == [second]
        assert first != second
        time.sleep(2.0)  # the triggers service loads new automations periodically
        emit_retrain_event("other-model", "not ours")  # another model's event must not retrain this one
        emit_retrain_event("loop-model", "embedding drift (mmd p=0.005 < 0.01)", {"monitor_run_id": "abc"})
        runs = wait_for_runs(client, deployment_id)
    assert len(runs) == 1, "the automation did not create a flow run of retrain/on-drift"
    assert runs[0].parameters["reason"] == "embedding drift (mmd p=0.005 < 0.01)"


def test_retrain_trains_on_feedback_too(tmp_path):
    cfg = with_feedback(small_config(tmp_path, "registry.model_name=loop-model"))
    assert [(s.kind, s.model_name) for s in cfg.data.extra_sources] == [("feedback", "loop-model")]
    assert with_feedback(cfg) == cfg


def test_up_creates_the_retrain_automation_for_its_served_deployment(up):
    import httpx

    from tests.stack_support import AUTH, read_deployment

    retrain_dep = read_deployment(up.prefect_api, RETRAIN_DEPLOYMENT)
    monitor_dep = read_deployment(up.prefect_api, "monitor/daily")
    assert retrain_dep and monitor_dep and monitor_dep["parameters"]["model_name"] == "quickstart-sentiment"
    found = httpx.post(f"{up.prefect_api}/automations/filter", json={}, timeout=10, auth=AUTH).json()
    mine = [a for a in found if a["name"] == "retrain-quickstart-sentiment-on-drift"]
    assert len(mine) == 1 and mine[0]["enabled"]
    assert mine[0]["trigger"]["expect"] == ["ftflow.monitor.retrain-requested"]
    action = mine[0]["actions"][0]
    assert action["type"] == "run-deployment" and action["deployment_id"] == retrain_dep["id"]


def test_a_second_retrain_request_while_one_runs_is_cancelled(prefect_harness, tmp_path):
    """The retrain deployment `ftflow up` serves takes one run at a time; the server cancels the next."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from flows.deployments import build_deployments

    [deployment] = [d for d in build_deployments() if d.name == RETRAIN_DEPLOYMENT.split("/")[1]]
    deployment_id = deployment.apply()
    with get_client(sync_client=True) as client:
        first = client.create_flow_run_from_deployment(deployment_id, parameters={"reason": "drift 1"})
        second = client.create_flow_run_from_deployment(deployment_id, parameters={"reason": "drift 2"})
        assert client.set_flow_run_state(first.id, Pending()).status.value == "ACCEPT"  # takes the one slot
        client.set_flow_run_state(second.id, Pending())
        assert client.read_flow_run(second.id).state.type.value == "CANCELLED"
        assert client.read_flow_run(first.id).state.type.value == "PENDING"
