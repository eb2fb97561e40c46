"""`ftflow up` for real: Prefect and MLflow servers on loopback, the served deployments, a run from the API.

The stack is shared with the other system tests (tests/stack_support.py); the stop test here starts it
again, so the tests pass in any order.
"""

from __future__ import annotations

import pytest

from tests import stack_support as ss

pytestmark = pytest.mark.slow


def load_prefect_yaml() -> dict:
    import yaml

    return yaml.safe_load((ss.ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_declares_the_served_deployments_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    from flows.deployments import DEPLOYMENT_NAMES, NIGHTLY_CRON
    from tasks.config import load_config

    quickstart = load_config(ss.ROOT / "configs" / "quickstart.yaml").model_dump(mode="json")
    names = set()
    for dep in load_prefect_yaml()["deployments"]:
        flow = load_flow_from_entrypoint(str(ss.ROOT / dep["entrypoint"]))
        names.add(f"{flow.name}/{dep['name']}")
        params = flow.validate_parameters(dep["parameters"])  # what the server's form would accept
        if "config" in params:
            assert params["config"].model_dump(mode="json") == quickstart, dep["name"]
        if dep["name"] == "nightly":
            assert [s["cron"] for s in dep["schedules"]] == [NIGHTLY_CRON]
    assert set(DEPLOYMENT_NAMES) <= names and {"fine-tune/gpu-docker", "fine-tune/gpu-k8s"} <= names


def test_gpu_job_templates_define_every_variable_they_use():
    import json

    from prefect.utilities.templating import find_placeholders

    pools = {wp["name"]: wp for wp in load_prefect_yaml()["definitions"]["work_pools"].values()}
    for pool, path in [
        ("finetune-docker-gpu", "deploy/docker/gpu-job-template.json"),
        ("finetune-k8s-gpu", "deploy/k8s/gpu-job-template.json"),
    ]:
        template = json.loads((ss.ROOT / path).read_text())
        variables = set(template["variables"]["properties"])
        used = {p.name for p in find_placeholders(template["job_configuration"])}
        assert used <= variables, (path, used - variables)
        assert "gpu_count" in used, path
        assert set(pools[pool]["job_variables"]) <= variables, (pool, set(pools[pool]["job_variables"]) - variables)


def test_prefect_ui_is_told_a_reachable_api_address(tmp_path, monkeypatch):
    import socket

    from flows.ops.stack import prefect_service

    monkeypatch.delenv("PREFECT_UI_API_URL", raising=False)
    local = prefect_service(tmp_path, "127.0.0.1", 4300, tmp_path)
    assert local.env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4300/api"
    # Listening on every interface: 0.0.0.0 is no address for a browser on another machine.
    everywhere = prefect_service(tmp_path, "0.0.0.0", 4300, tmp_path)
    assert everywhere.env["PREFECT_UI_API_URL"] == f"http://{socket.getfqdn()}:4300/api"


def test_prefect_origins_are_the_uis_own_and_the_listed_ones(tmp_path, monkeypatch):
    import socket

    from flows.ops.stack import CORS_ORIGINS_ENV, extra_origins, prefect_origins, prefect_service

    assert prefect_origins("127.0.0.1", 4300, "http://127.0.0.1:4300/api") == [
        "http://127.0.0.1:4300",
        "http://localhost:4300",
        "http://[::1]:4300",
    ]
    everywhere = prefect_origins("0.0.0.0", 4300, "https://prefect.example.com/api", ["https://dash.example.com"])
    assert everywhere[0] == f"http://{socket.getfqdn()}:4300" and "*" not in everywhere
    assert everywhere[-2:] == ["https://prefect.example.com", "https://dash.example.com"]
    # The older alias would win over ours in Prefect's settings if it were left in the server's environment.
    monkeypatch.setenv("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", "https://dash.example.com/")
    env = prefect_service(tmp_path, "127.0.0.1", 4300, tmp_path).env
    assert "PREFECT_SERVER_CORS_ALLOWED_ORIGINS" not in env
    assert env[CORS_ORIGINS_ENV].split(",")[-1] == "https://dash.example.com"
    for bad, problem in [("*", "every web page"), ("https://a.example/path", "not an origin"), ("a.example", "not an")]:
        with pytest.raises(ValueError, match=problem):
            extra_origins({CORS_ORIGINS_ENV: f"https://ok.example,{bad}"})


def test_up_refuses_cors_for_every_origin_before_starting_anything():
    import os
    import subprocess
    import sys

    from flows.ops.stack import CREDENTIAL_VARS

    # The session's `up` fixture exports half the credentials for its clients; this refusal is about CORS alone.
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.ops.cli", "up", "--prefect-port", "0", "--mlflow-port", "0"],
        cwd=ss.ROOT,
        env=dict(env, PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS="*"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS='*'" in proc.stderr
    assert "starting" not in proc.stdout


def test_up_refuses_a_bad_config_before_starting_anything():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "flows.ops.cli", "up", "--config", "configs/nope.yaml"],
        cwd=ss.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "nope.yaml" in proc.stderr and "quickstart" in proc.stderr
    assert "Traceback" not in proc.stderr and "starting" not in proc.stdout


def test_up_refuses_a_network_host_without_credentials_before_starting_anything():
    import os
    import subprocess
    import sys

    from flows.ops.stack import CREDENTIAL_VARS

    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.ops.cli", "up", "--host", "0.0.0.0"],
        cwd=ss.ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "--host 0.0.0.0" in proc.stderr and "PREFECT_API_AUTH_STRING" in proc.stderr
    assert "starting" not in proc.stdout


@pytest.mark.parametrize(
    "env, problem",
    [
        ({"PREFECT_API_AUTH_STRING": "a:abcdefghijklmn"}, "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD missing"),
        ({**ss.CREDENTIALS, "PREFECT_API_AUTH_STRING": "no-colon-here-at-all"}, "must be 'user:password'"),
        ({**ss.CREDENTIALS, "MLFLOW_TRACKING_PASSWORD": "password1234"}, "MLFLOW_TRACKING_PASSWORD is too weak"),
    ],
)
def test_credentials_must_be_complete_and_strong(env, problem):
    from flows.ops.stack import read_credentials

    with pytest.raises(ValueError, match=problem):
        read_credentials(env)
    assert read_credentials({}) is None
    assert read_credentials(ss.CREDENTIALS).prefect_auth_string == ss.CREDENTIALS["PREFECT_API_AUTH_STRING"]


def test_without_credentials_both_servers_answer_401(up):
    import httpx

    dep = ss.read_deployment(up.prefect_api, "fine-tune/manual")  # with them: 200
    for auth in (None, (ss.USER, "wrong-password-123")):
        assert httpx.get(f"{up.prefect_api}/deployments/name/fine-tune/manual", auth=auth).status_code == 401
        run = httpx.post(f"{up.prefect_api}/deployments/{dep['id']}/create_flow_run", auth=auth, json={})
        assert run.status_code == 401  # nobody can start a flow that reads files on this host
        search = httpx.get(f"{up.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", auth=auth)
        assert search.status_code == 401
        upload = httpx.put(
            f"{up.mlflow_url}/api/2.0/mlflow-artifacts/artifacts/1/x/model.onnx", auth=auth, content=b"not a model"
        )
        assert upload.status_code == 401  # nor write over a version's files through the artifact proxy
    assert (
        httpx.get(f"{up.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", auth=ss.AUTH).status_code == 200
    )
    assert "login:        Prefect 'ftflow-test'" in "\n".join(up.lines) and ss.PASSWORD not in "\n".join(up.lines)


def test_prefect_answers_cross_origin_calls_only_from_its_own_origins(up):
    """A browser asks first (a CORS preflight); Prefect's `*` would let any site's page drive the API."""
    import httpx

    port = up.prefect_url.rsplit(":", 1)[1]
    url = f"{up.prefect_api}/deployments/filter"
    asks = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(url, headers={"Origin": origin, **asks}, timeout=10)

    for evil in ("http://evil.example", "null", f"http://evil.example:{port}"):
        refused = preflight(evil)
        assert refused.headers.get("access-control-allow-origin") is None, (evil, refused.headers)
        plain = httpx.post(url, headers={"Origin": evil}, json={}, auth=ss.AUTH, timeout=10)
        assert plain.headers.get("access-control-allow-origin") is None, (evil, plain.headers)
    for own in (up.prefect_url, f"http://localhost:{port}"):
        allowed = preflight(own)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == own, allowed.headers


def test_deployments_are_served_with_the_nightly_schedule_active(up):
    from flows.deployments import DEPLOYMENT_NAMES, NIGHTLY_CRON

    deps = {name: ss.read_deployment(up.prefect_api, name) for name in DEPLOYMENT_NAMES}
    nightly = deps["fine-tune/nightly"]
    assert not nightly["paused"] and nightly["status"] == "READY"
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [(NIGHTLY_CRON, True)]
    assert deps["fine-tune/manual"]["schedules"] == []
    for name, dep in deps.items():
        assert dep["enforce_parameter_schema"], name
    # The form: the typed config with the preset's values as defaults.
    manual = deps["fine-tune/manual"]
    assert manual["parameters"]["config"]["registry"]["model_name"] == "quickstart-sentiment"
    assert "PipelineConfig" in manual["parameter_openapi_schema"]["definitions"]


def test_bad_parameter_is_refused_before_a_run_starts(up):
    from tasks.config import load_config

    cfg = load_config(ss.ROOT / "configs" / "quickstart.yaml").model_dump(mode="json")
    cfg["training"]["epochs"] = -1
    dep = ss.read_deployment(up.prefect_api, "fine-tune/manual")
    refused = ss.create_flow_run(up.prefect_api, dep["id"], {"config": cfg})
    assert getattr(refused, "status_code", 201) in (409, 422), refused
    assert "epochs" in refused.text or "-1" in refused.text


def test_manual_run_from_the_api_completes(manual_run):
    fr = manual_run["flow_run"]
    assert fr["state_type"] == "COMPLETED", f"{fr['state_type']}: {fr['state']}\n{manual_run['serve_log']}"


def test_served_run_logs_to_the_mlflow_server(up, manual_run):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=up.mlflow_url, registry_uri=up.mlflow_url)
    exp = c.get_experiment_by_name("stack-tests")  # the nightly test's run logs here too
    runs = c.search_runs([exp.experiment_id], f"tags.prefect_flow_run_id = '{manual_run['flow_run']['id']}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert {"test_accuracy", "test_f1", "train_loss"} <= set(run.data.metrics)
    versions = [v for v in c.search_model_versions("name='stack-sentiment'") if v.run_id == run.info.run_id]
    assert len(versions) == 1  # registered once
    assert manual_run["challenger"].version == versions[0].version  # the challenger when the run ended
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"config.yaml", "model", "onnx"}


def test_run_summary_artifact_links_the_mlflow_run(up, manual_run):
    arts = {a["key"]: a for a in ss.read_artifacts(up.prefect_api, manual_run["flow_run"]["id"])}
    summary = arts["fine-tune-summary"]["data"]
    assert f"{up.mlflow_url}/#/experiments/" in summary and "/runs/" in summary
    assert any(k.endswith("test-metrics") for k in arts)


def test_promote_deployment_makes_the_challenger_champion(up, manual_run):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=up.mlflow_url, registry_uri=up.mlflow_url)
    challenger = c.get_model_version_by_alias("stack-sentiment", "challenger").version  # "1" unless nightly ran first
    dep = ss.read_deployment(up.prefect_api, "promote/manual")
    fr = ss.create_flow_run(up.prefect_api, dep["id"], {"model_name": "stack-sentiment"})
    fr = ss.wait_flow_run(up.prefect_api, fr["id"], 180)
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{up.log_tail('serve')}"
    assert c.get_model_version_by_alias("stack-sentiment", "champion").version == challenger
    assert c.get_experiment_by_name("promotions") is not None  # the decision is recorded on the server


def test_nightly_deployment_retrains_then_runs_the_promotion_gate(up, manual_run):
    import httpx
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=up.mlflow_url, registry_uri=up.mlflow_url)

    def decisions() -> int:
        exp = c.get_experiment_by_name("promotions")
        return len(c.search_runs([exp.experiment_id], "tags.model_name = 'stack-sentiment'")) if exp else 0

    versions_before, decisions_before = len(c.search_model_versions("name='stack-sentiment'")), decisions()
    dep = ss.read_deployment(up.prefect_api, "fine-tune/nightly")
    fr = ss.create_flow_run(up.prefect_api, dep["id"], {"config": manual_run["config"].model_dump(mode="json")})
    fr = ss.wait_flow_run(up.prefect_api, fr["id"], ss.RUN_TIMEOUT_S)
    assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{up.log_tail('serve')}"
    assert fr["name"] == "nightly-stack-manual"
    children = httpx.post(
        f"{up.prefect_api}/flow_runs/filter",
        timeout=10,
        auth=ss.AUTH,
        json={"flow_runs": {"parent_flow_run_id": {"any_": [fr["id"]]}}},
    ).json()
    flows = {
        httpx.get(f"{up.prefect_api}/flows/{child['flow_id']}", timeout=10, auth=ss.AUTH).json()["name"]: child[
            "state_type"
        ]
        for child in children
    }
    assert flows == {"fine-tune": "COMPLETED", "promote": "COMPLETED"}
    versions = c.search_model_versions("name='stack-sentiment'")
    assert len(versions) == versions_before + 1  # retrained: a new challenger
    assert decisions() == decisions_before + 1  # the gate ran again and recorded its decision, promoted or refused
    assert c.get_model_version_by_alias("stack-sentiment", "champion").version in {v.version for v in versions}


def test_sigterm_stops_every_process_and_the_next_up_activates_the_schedule_again(up):
    from flows.ops.supervisor import port_in_use

    ports = [int(u.rsplit(":", 1)[1]) for u in (up.prefect_url, up.mlflow_url)]
    assert_stops_cleanly(up)
    assert "All deployments have been paused" in up.log_tail("serve")  # schedules rest while nobody serves
    assert not any(port_in_use("127.0.0.1", port) for port in ports)
    up.start()  # the next `ftflow up` on the same home; the shared stack serves again for the tests after this one
    nightly = ss.read_deployment(up.prefect_api, "fine-tune/nightly")
    assert not nightly["paused"] and [s["active"] for s in nightly["schedules"]] == [True]


def assert_stops_cleanly(up: ss.UpProcess) -> None:
    """SIGTERM `ftflow up`; it exits 0 and no process it started (or they started) is left."""
    import psutil

    children = up.descendants()
    assert len(children) >= 4, [p.cmdline() for p in children]  # prefect, mlflow (+ its uvicorn), serving
    assert up.stop() == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
    assert "stopped: every process" in "\n".join(up.lines)
