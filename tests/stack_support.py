"""One real `ftflow up` per test session, shared by test_stack.py and test_browser.py, and the REST calls they make.

The stack is the command itself, run as a subprocess on free loopback ports, with credentials: both
servers require them, and every REST call here passes them (the `up` fixture puts MLflow's in the
environment for the session). test_stack.py's stop test stops it with SIGTERM and starts it again on
the same home, so the tests using it pass in any order; the session's end stops it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
UP_TIMEOUT_S = 180
RUN_TIMEOUT_S = 300
USER = "ftflow-test"
PASSWORD = secrets.token_urlsafe(18)
AUTH = (USER, PASSWORD)  # Prefect's basic auth string is USER:PASSWORD, and the MLflow admin is USER
CREDENTIALS = {
    "PREFECT_API_AUTH_STRING": f"{USER}:{PASSWORD}",
    "MLFLOW_TRACKING_USERNAME": USER,
    "MLFLOW_TRACKING_PASSWORD": PASSWORD,
}


def far_from_the_crons(now: dt.datetime | None = None, margin_h: float = 1.5) -> str:
    """A time zone whose local time is at least `margin_h` before the next nightly (02:00) or monitor (06:00) run.

    Each stack's schedules are active, and a scheduled monitor or nightly run amid the module's steps adds runs
    and versions that the steps count (a run of the module across 06:00 UTC had a second retrain request).
    """
    from zoneinfo import ZoneInfo

    from flows.deployments import MONITOR_CRON, NIGHTLY_CRON

    hours = [int(cron.split()[1]) for cron in (NIGHTLY_CRON, MONITOR_CRON)]
    now = now or dt.datetime.now(dt.UTC)
    for zone in ("UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata"):  # one is always far enough
        local = now.astimezone(ZoneInfo(zone))
        at = local.hour + local.minute / 60
        if min((hour - at) % 24 for hour in hours) >= margin_h:
            return zone
    raise AssertionError(f"no listed time zone is {margin_h} hours before {hours} at {now}")


class UpProcess:
    """`ftflow up` in a subprocess; its printed URLs; SIGTERM to stop it."""

    def __init__(self, home: Path, config: Path, args: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.home, self.config = home, config
        self.args, self.env = list(args), env or {}  # more options (--database URL, --postgres), their variables
        if "--timezone" not in self.args:  # the schedules are active: none may fire amid a test's steps
            self.args += ["--timezone", far_from_the_crons()]
        self.start()

    def start(self) -> None:
        """Run `ftflow up` on this home (again, after a stop) and wait until it says it is up."""
        # Poll often: a triggered run starts sooner. INFO logs: the serving log shows each stage and the shutdown.
        env = dict(
            os.environ, PREFECT_RUNNER_POLL_FREQUENCY="2", PREFECT_LOGGING_LEVEL="INFO", **CREDENTIALS, **self.env
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flows.ops.cli",
                "up",
                "--prefect-port",
                "0",
                "--mlflow-port",
                "0",
                "--home",
                str(self.home),
                "--config",
                str(self.config),
                *self.args,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        # Bound now: a stopped process's reader must not write into the next one's lines.
        threading.Thread(target=self._drain, args=(self.proc, self.lines), daemon=True).start()
        self._wait_up()
        text = "\n".join(self.lines)
        self.prefect_url = re.search(r"Prefect UI:\s+(\S+)", text).group(1)
        self.mlflow_url = re.search(r"MLflow UI:\s+(\S+)", text).group(1)
        self.prefect_api = f"{self.prefect_url}/api"

    @staticmethod
    def _drain(proc: subprocess.Popen, lines: list[str]) -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    def _wait_up(self) -> None:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not any("stack is up" in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("`ftflow up` did not come up:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.3)

    def descendants(self) -> list:
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.home / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def trigger_manual_run(up: UpProcess, tmp: Path) -> dict:
    """One run of `fine-tune/manual` with a small config, triggered as the UI's Run button does; waited for."""
    from tests.support import small_config

    cfg = small_config(
        tmp,
        "name=stack-manual",
        "registry.model_name=stack-sentiment",
        "registry.experiment=stack-tests",
        "export.quantize=false",
    )
    dep = read_deployment(up.prefect_api, "fine-tune/manual")
    t0 = time.monotonic()
    flow_run = create_flow_run(up.prefect_api, dep["id"], {"config": cfg.model_dump(mode="json")})
    final = wait_flow_run(up.prefect_api, flow_run["id"], RUN_TIMEOUT_S)
    seconds = time.monotonic() - t0
    # Read now: the nightly test moves the challenger alias, and the tests run in any order.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        challenger = MlflowClient(tracking_uri=up.mlflow_url, registry_uri=up.mlflow_url).get_model_version_by_alias(
            cfg.registry.model_name, "challenger"
        )
    except MlflowException:  # the run failed before registering; test_manual_run_from_the_api_completes says why
        challenger = None
    return {
        "config": cfg,
        "flow_run": final,
        "seconds": seconds,
        "serve_log": up.log_tail("serve"),
        "challenger": challenger,
    }


def read_deployment(api: str, full_name: str) -> dict:
    r = httpx.get(f"{api}/deployments/name/{full_name}", timeout=10, auth=AUTH)
    r.raise_for_status()
    return r.json()


def create_flow_run(api: str, deployment_id: str, parameters: dict) -> dict | httpx.Response:
    """POST /deployments/{id}/create_flow_run, the Prefect UI's Run button; the response when refused."""
    r = httpx.post(
        f"{api}/deployments/{deployment_id}/create_flow_run",
        timeout=30,
        auth=AUTH,
        json={"parameters": parameters, "state": {"type": "SCHEDULED", "message": "Run from the test"}},
    )
    return r.json() if r.status_code == 201 else r


def wait_flow_run(api: str, flow_run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10, auth=AUTH).json()
        if run["state_type"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(2)


def read_artifacts(api: str, flow_run_id: str) -> list[dict]:
    r = httpx.post(
        f"{api}/artifacts/filter", timeout=10, auth=AUTH, json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
    )
    r.raise_for_status()
    return r.json()
