"""`ftflow up --postgres`: a team of one's PostgreSQL, started in the stack's home, serving, stopped with the stack.

The team's stack on a server it is given (`--database URL`, with workers, two models and the whole loop on it;
the password a `${NAME}` reference that shows nowhere) is tests/system/test_workers.py's `postgres` stack.
Here `ftflow up` starts its own server: `initdb` in the home, loopback, a free port, a generated password,
and the deployments served in its own process (no workers): a run of `validate-data/manual` is executed
there, recorded in Prefect's store and MLflow's on that server, its artifacts proxied by the tracking server.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests import stack_support as ss

pytestmark = pytest.mark.slow


def test_up_postgres_starts_a_local_server_serves_on_it_and_stops_it_with_the_stack(monkeypatch):
    """`ftflow up --postgres`: initdb in the home, the servers and a served run on it, everything stopped by SIGTERM."""
    import shutil

    import psutil
    from mlflow.tracking import MlflowClient

    from flows.ops.supervisor import port_in_use

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, ss.CREDENTIALS[key])
    folder = Path(tempfile.mkdtemp(prefix="ftflow-up-pg-"))
    folder.chmod(0o755)  # run as root, the server runs as `postgres`, which must reach its folder
    try:
        up = ss.UpProcess(folder / "home", ss.ROOT / "configs" / "quickstart.yaml", args=("--postgres",))
        text = "\n".join(up.lines)
        assert f"PostgreSQL in {folder / 'home' / 'postgres'}" in text and "starting PostgreSQL" in text
        assert (folder / "home" / "postgres" / "PG_VERSION").exists()
        servers = [p for p in up.descendants() if p.name() == "postgres"]
        assert servers and (os.geteuid() != 0 or servers[0].username() == "postgres")
        port = int(text.split("@127.0.0.1:")[1].split("/")[0])

        # A served run (the UI's Quick run, the deployment's own config), executed by the serving process.
        dep = ss.read_deployment(up.prefect_api, "validate-data/manual")
        created = ss.create_flow_run(up.prefect_api, dep["id"], dep["parameters"])
        assert isinstance(created, dict), created.text
        fr = ss.wait_flow_run(up.prefect_api, created["id"], 240)
        assert fr["state_type"] == "COMPLETED", f"{fr['state']}\n{up.log_tail('serve')}"
        assert fr["work_pool_name"] is None  # served in-process, not by a worker
        c = MlflowClient(tracking_uri=up.mlflow_url)
        [run] = c.search_runs(
            [e.experiment_id for e in c.search_experiments()], f"tags.prefect_flow_run_id = '{fr['id']}'"
        )
        assert run.info.status == "FINISHED"
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri  # proxied
        assert c.list_artifacts(run.info.run_id)  # the validation's reports, kept in the stack's home
        assert list((folder / "home" / "mlflow-artifacts").rglob("*"))

        children = up.descendants()
        assert up.stop() == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert not port_in_use("127.0.0.1", port)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
