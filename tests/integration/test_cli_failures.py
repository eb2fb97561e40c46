"""The command line when a flow fails inside a stage: one clear error, and the log file with the traceback.

A real `ftflow validate` in a subprocess, with its own Prefect server and MLflow store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_failed_run_prints_one_error_and_the_log_path_with_the_traceback(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text(
        "text,label\n" + "".join(f"review {i},{'Positive' if i % 9 == 0 else 'positive'}\n" for i in range(60))
    )
    env = {
        **os.environ,
        "FTFLOW_CACHE": str(tmp_path / "cache"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ml.db'}",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }  # a busy machine starts it slowly
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.ops.cli",
            "validate",
            "configs/quickstart.yaml",
            "--set",
            "data.source.kind=file",
            "--set",
            f"data.source.path={data}",
            "--set",
            f"run_dir={tmp_path / 'runs'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("differ only by case") == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert "'positive' (53 rows), 'Positive' (7 rows)" in proc.stderr
    log = Path(proc.stderr.split("full log (with the traceback): ")[1].split()[0])
    assert log.is_file() and log.is_relative_to(tmp_path / "cache") and "LabelSpellingError" in log.read_text()
    assert "Traceback" in log.read_text()
