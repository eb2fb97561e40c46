"""Faults leave nothing half done: atomic files, locked run folders, complete checkpoints only,
a store that two runs can create together, and no Prefect server left behind by a killed CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, start_together


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    from tasks.io import atomic_path, read_json, write_json

    path = tmp_path / "train_summary.json"
    write_json(path, {"global_step": 10})
    with pytest.raises(OSError, match="No space left"), atomic_path(path) as tmp:
        tmp.write_text('{"global_step": 2')  # half a file, then the disk is full
        raise OSError(28, "No space left on device")
    assert read_json(path) == {"global_step": 10}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_summary.json"]  # no temporary left


def test_a_folder_is_replaced_whole(tmp_path):
    from tasks.io import atomic_path

    bundle = tmp_path / "onnx"
    bundle.mkdir()
    (bundle / "model.onnx").write_text("old")
    with pytest.raises(RuntimeError), atomic_path(bundle) as tmp:
        tmp.mkdir()
        (tmp / "model.onnx").write_text("new, half")
        raise RuntimeError("killed while exporting")
    assert (bundle / "model.onnx").read_text() == "old"
    with atomic_path(bundle) as tmp:
        tmp.mkdir()
        (tmp / "model.int8.onnx").write_text("new")
    assert sorted(p.name for p in bundle.iterdir()) == ["model.int8.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def _checkpoint(folder: Path, step: int, state: str | None = None, weights: bool = True) -> None:
    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    if state is not None:
        (ck / "trainer_state.json").write_text(state)
    if weights:
        (ck / "model.safetensors").write_bytes(b"\x08" * 64)


def test_only_a_complete_checkpoint_is_resumed_from(tmp_path):
    from tasks.modelling.checkpoints import last_checkpoint

    _checkpoint(tmp_path, 2, json.dumps({"global_step": 2}))
    _checkpoint(tmp_path, 4, '{"global_step": 4, "log_hist')  # state cut off by a full disk
    _checkpoint(tmp_path, 6, json.dumps({"global_step": 6}), weights=False)  # killed before the weights
    _checkpoint(tmp_path, 8, None)  # killed before the state
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    _checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


@pytest.mark.slow
def test_a_second_resume_of_a_run_folder_is_refused_by_name(flow_result):
    from flows.training import fine_tune
    from tasks.io import FolderBusy, locked_folder
    from tasks.platform import tracking

    result = flow_result["result"]
    status = tracking.client().get_run(result["run_id"]).info.status
    with (
        locked_folder(result["run_dir"], "fine-tune flow run first-resume (pid 1)"),
        pytest.raises(FolderBusy, match=r"in use by fine-tune flow run first-resume \(pid 1\)"),
    ):
        fine_tune(config=flow_result["config"], resume_from=result["run_dir"])
    assert tracking.client().get_run(result["run_id"]).info.status == status  # the MLflow run was not touched


@pytest.mark.slow
def test_two_runs_started_together_on_a_fresh_store_both_succeed(prefect_harness, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from prefect.settings import PREFECT_API_URL

    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI for subprocesses: after any earlier test the
    # runs would log into the session's store, which tracking_uri() prefers, instead of the fresh one.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = (tmp_path / "fresh-mlruns").resolve()
    cmd = [
        "validate",
        str(ROOT / "configs" / "quickstart.yaml"),
        "--set",
        "data.max_rows=200",
        "--set",
        f"run_dir={tmp_path / 'runs'}",
        "--set",
        "registry.experiment=fresh-store",
    ]
    outcomes = start_together(
        [cmd, cmd], tmp_path, {"FTFLOW_MLRUNS": str(store), "PREFECT_API_URL": PREFECT_API_URL.value()}
    )
    assert [code for code, _ in outcomes] == [0, 0], [out[-3000:] for _, out in outcomes]
    # A client of its own on the fresh store: tracking.configure() would point MLflow at it for later tests too.
    fresh = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    runs = fresh.search_runs([fresh.get_experiment_by_name("fresh-store").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_a_killed_cli_leaves_no_prefect_server(tmp_path):
    import psutil

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "FTFLOW_MLRUNS": str(tmp_path / "mlruns"),
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # exported by any earlier in-process tracking.configure()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.ops.cli",
            "validate",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--set",
            "data.max_rows=200",
            "--set",
            f"run_dir={tmp_path / 'runs'}",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def prefect_servers():
        try:
            return [
                p
                for p in psutil.Process(cli.pid).children(recursive=True)
                if "prefect.server.api.server:create_app" in " ".join(p.cmdline())
            ]
        except psutil.Error:  # a child that ended while being read
            return []

    servers: list = []
    try:
        deadline = time.monotonic() + 120
        while not servers and time.monotonic() < deadline and cli.poll() is None:
            servers = prefect_servers()
            time.sleep(0.2)
        assert servers, "the CLI started no Prefect server (or finished before one was seen)"
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        _, alive = psutil.wait_procs(servers, timeout=20)
        assert not alive, f"Prefect server {[p.pid for p in alive]} outlived its killed CLI"
    finally:
        if cli.poll() is None:
            cli.kill()
        for p in servers:  # nothing of ours left running, whatever happened
            if p.is_running():
                p.kill()
