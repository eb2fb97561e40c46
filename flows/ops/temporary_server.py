"""The Prefect API a CLI command runs its flow against when no server is configured.

With no PREFECT_API_URL, Prefect starts a temporary server in a child process and stops it at
interpreter exit. A CLI killed with `kill -9` (or by the OOM killer) never reaches that exit, and
the server lives on as an orphan holding its port and the SQLite database. Here the CLI starts
the same server (Prefect's own app, as Prefect starts it) as its child with a parent-death signal
(Linux `prctl(PR_SET_PDEATHSIG)`): the kernel stops the server however its parent ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from flows.ops.supervisor import free_port

PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_S = 120.0  # a busy 2-core machine needs more than Prefect's 20 s default


def die_with_parent(parent_pid: int):
    """A preexec function: SIGTERM this child when the process that started it ends (Linux)."""

    def set_signal() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)

    return set_signal


def start_server(env_settings: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start Prefect's API app under uvicorn as our child; return the process and its API URL once healthy."""
    # heavy (prefect): loaded when this runs, so importing flows.ops.temporary_server stays light
    import prefect

    port = free_port()
    env = {
        **os.environ,
        **env_settings,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(prefect.__module_path__.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ],
        env=env,
        preexec_fn=die_with_parent(os.getpid()),
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the temporary Prefect server exited with code {proc.returncode} before it was "
                f"ready; its output is above. Or set PREFECT_API_URL to a running server"
            )
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, api
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(
        f"the temporary Prefect server on port {port} was not ready after {STARTUP_TIMEOUT_S:.0f} s; "
        f"set PREFECT_API_URL to a running server (`prefect server start`) and try again"
    )


def stop_server(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, `grace` seconds to exit, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def prefect_api() -> Iterator[str | None]:
    """Run the block against the configured Prefect API, else a temporary server that dies with this process."""
    # heavy (prefect): loaded when this runs, so importing flows.ops.temporary_server stays light
    from prefect.settings import (
        PREFECT_API_URL,
        get_current_settings,
        temporary_settings,
    )

    settings = get_current_settings()
    if settings.api.url:  # a server or Cloud is configured (env, profile, test harness)
        yield settings.api.url
        return
    proc, api = start_server(settings.to_environment_variables(exclude_unset=True))
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            try:
                yield api
            finally:
                send_pending_logs_and_events()
    finally:
        stop_server(proc)


def send_pending_logs_and_events() -> None:
    """Hand Prefect's queued logs and events to the server before it stops (else they fail at exit)."""
    # heavy (prefect): loaded when this runs, so importing flows.ops.temporary_server stays light
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)
