"""The command line: fast help, and clear errors for what is refused before any server starts.

A run that fails inside a flow (a Prefect server, a real stage) is in tests/integration/test_cli_failures.py.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "flows.ops.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_does_not_import_heavy_libraries():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "validate" in proc.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "prefect", "mlflow", "great_expectations"}


def test_run_help_documents_options():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0 and "--set" in proc.stdout and "KEY=VALUE" in proc.stdout


def test_bad_config_value_is_one_clear_error():
    proc = run_cli("run", "configs/quickstart.yaml", "--set", "training.epochs=-1")
    assert proc.returncode != 0
    assert "training.epochs" in proc.stderr and "-1" in proc.stderr and "greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_from_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path):
    proc = run_cli("run", "--resume-from", str(tmp_path))
    assert proc.returncode != 0 and "not a run folder" in proc.stderr and str(tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_that_does_not_exist_is_refused_before_any_data_is_read(tmp_path):
    proc = run_cli(
        "run",
        "configs/quickstart.yaml",
        "--set",
        f"model.name={tmp_path / 'no-such-model'}",
        "--set",
        f"run_dir={tmp_path / 'runs'}",
    )
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "model.name" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()  # no run was started
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"prefect", "torch"}  # refused before a Prefect server or a model was loaded
