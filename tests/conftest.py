"""Shared fixtures: an offline, throw-away environment for every test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="ftflow-tests-"))
# Set before any test module imports prefect or mlflow: both read their settings at import.
os.environ.update({
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "FTFLOW_MLRUNS": str(_SESSION_TMP / "mlruns"),
    "FTFLOW_CACHE": str(_SESSION_TMP / "cache"),
})
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)

ROOT = Path(__file__).resolve().parent.parent


def small_config(tmp: Path, *overrides: str):
    """The quickstart, shrunk to train in seconds on 2 cores."""
    from tasks.config import load_config

    return load_config(ROOT / "configs" / "quickstart.yaml", [
        "data.max_rows=360", "model.max_length=32", "training.epochs=1", "training.train_batch_size=16",
        "training.logging_steps=5", f"run_dir={tmp / 'runs'}", "data.validation.min_rows=50", *overrides,
    ])


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


def promoted_copy(flow_result: dict, name: str, workdir: Path) -> dict:
    """The session's trained model registered as `name` and promoted through the real gate; its candidate dict."""
    from tasks import register, tracking
    from tasks.promote import load_candidate, promote_challenger

    trained = flow_result["result"]["registered"]
    c = tracking.client()
    c.create_registered_model(name)
    version = c.create_model_version(name, source=trained["source"], run_id=flow_result["result"]["run_id"],
                                     tags=dict(register.get_version(trained["name"], trained["version"]).tags))
    register.set_alias(name, register.CHALLENGER, version.version)
    assert promote_challenger(name)["promoted"]
    return load_candidate(name, register.CHAMPION, workdir)


@pytest.fixture(scope="session")
def up(tmp_path_factory):
    """One real `ftflow up` stack, shared by test_stack.py and test_browser.py; stopped at session end."""
    import stack_support

    stack = stack_support.UpProcess(tmp_path_factory.mktemp("stack") / "ftflow", ROOT / "configs" / "quickstart.yaml")
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def manual_run(up, tmp_path_factory):
    """A `fine-tune/manual` run triggered through the Prefect API on the shared stack."""
    import stack_support

    return stack_support.trigger_manual_run(up, tmp_path_factory.mktemp("stackrun"))
