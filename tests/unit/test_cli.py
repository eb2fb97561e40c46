"""The command line: fast help, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT  # noqa: E402


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "flows.ops.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


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
    proc = run_cli("run", "configs/quickstart.yaml", "--set", f"model.name={tmp_path / 'no-such-model'}",
                   "--set", f"run_dir={tmp_path / 'runs'}")
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "model.name" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()  # no run was started
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"prefect", "torch"}  # refused before a Prefect server or a model was loaded


def test_failed_run_prints_one_error_and_the_log_path_with_the_traceback(tmp_path):
    import os

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"review {i},{'Positive' if i % 9 == 0 else 'positive'}\n"
                                            for i in range(60)))
    env = {**os.environ, "FTFLOW_CACHE": str(tmp_path / "cache"), "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ml.db'}",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a busy machine starts it slowly
    proc = subprocess.run([sys.executable, "-m", "flows.ops.cli", "validate", "configs/quickstart.yaml",
                           "--set", "data.source.kind=file", "--set", f"data.source.path={data}",
                           "--set", f"run_dir={tmp_path / 'runs'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("differ only by case") == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert "'positive' (53 rows), 'Positive' (7 rows)" in proc.stderr
    log = Path(proc.stderr.split("full log (with the traceback): ")[1].split()[0])
    assert log.is_file() and log.is_relative_to(tmp_path / "cache") and "LabelSpellingError" in log.read_text()
    assert "Traceback" in log.read_text()
