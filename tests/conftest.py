"""Shared fixtures: an offline, throw-away environment for every test session.

The suite in three layers (`make test` runs all, `make test-fast` the unit layer in under a minute):
- tests/unit: plain functions on tiny inputs; no server, no training, no flow in a subprocess.
- tests/integration: the real parts together: Prefect's test harness, an MLflow SQLite store, Great
  Expectations, ONNX Runtime, a few training steps of the packaged MiniLM (`flow_result` trains once
  per session and is shared).
- tests/system: `ftflow up` as a user runs it (Prefect and MLflow servers, served deployments, one
  stack per session shared through `up`), the HTTP service as a process, the UIs in a browser.
A real PostgreSQL (`postgres`, the server `ftflow up --postgres` starts; `make test` installs it) backs the
prediction log's PostgreSQL tests, the shared search (tests/integration/test_search_workers.py) and the
team stack (tests/system/test_workers.py's `postgres` stack).
Each test passes alone and in any order: state a test changes is its own (its tmp_path, its
registered model name, `monkeypatch`), or is read by the module fixture that made it. Helpers
shared between files live in tests/support.py; a test file never imports another.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="ftflow-tests-"))
# Set before any test module imports prefect or mlflow: both read their settings at import.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "FTFLOW_MLRUNS": str(_SESSION_TMP / "mlruns"),
        "FTFLOW_CACHE": str(_SESSION_TMP / "cache"),
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

from tests.support import ROOT, small_config  # noqa: E402  (after the environment above is set)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def flow_result(prefect_harness, tmp_path_factory):
    """One real fine_tune flow run on a small slice, shared by the tests that inspect its results."""
    from flows.training import fine_tune

    tmp = tmp_path_factory.mktemp("flow")
    cfg = small_config(tmp, "registry.model_name=test-sentiment", "registry.experiment=tests")
    return {"config": cfg, "result": fine_tune(config=cfg)}


@pytest.fixture(scope="session")
def up(tmp_path_factory):
    """One real `ftflow up` stack, shared by tests/system; stopped at session end."""
    from tests import stack_support

    env = pytest.MonkeyPatch()
    # MlflowClient reads its login from the environment at each request (local stores ignore it).
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.setenv(key, stack_support.CREDENTIALS[key])
    stack = stack_support.UpProcess(tmp_path_factory.mktemp("stack") / "ftflow", ROOT / "configs" / "quickstart.yaml")
    yield stack
    stack.stop()
    env.undo()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL for the session (flows/ops/postgres.py, as `ftflow up --postgres` starts one); stopped at the end.

    Its folder is open to other users: run as root, the server runs as the `postgres` OS user, which
    must reach it (pytest's own temp folders are closed to others).
    """
    import shutil

    from flows.ops.postgres import LocalPostgres

    folder = Path(tempfile.mkdtemp(prefix="ftflow-pg-"))
    folder.chmod(0o755)
    # Durability off: a throw-away server; its checkpoints would otherwise cost seconds at each stop.
    fast = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    server = LocalPostgres(folder / "data", log_path=folder / "postgres.log", settings=fast).start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def manual_run(up, tmp_path_factory):
    """A `fine-tune/manual` run triggered through the Prefect API on the shared stack."""
    from tests import stack_support

    return stack_support.trigger_manual_run(up, tmp_path_factory.mktemp("stackrun"))
