"""Process supervision for `ftflow up`: start children in sessions of their own, wait for health, stop trees.

Each child runs in its own session (process group) so a Ctrl-C in the terminal reaches only
`ftflow up`; it also gets SIGTERM when `ftflow up` dies, even by SIGKILL (Linux). Stopping
signals the group by PID and then anything the child spawned that outlived it; nothing is left
running. Only the standard library is imported at module level: `ftflow --help` stays fast.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

START_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0


class StackError(RuntimeError):
    """A part of the stack could not start; the message says which, why and where its log is."""


@dataclass
class Service:
    """One child process of the stack and how to tell that it is up."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None
    log_path: Path
    cwd: Path
    user: str | None = None  # run as this OS user (ftflow up as root starts PostgreSQL as `postgres`)
    stop_signal: int = signal.SIGTERM  # what asks it to stop (PostgreSQL: SIGINT, its fast shutdown)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def pick_port(host: str, port: int, option: str) -> int:
    """`port`, or a free one when 0; a busy port is an error that names the option to change."""
    if port == 0:
        return free_port(host)
    if port_in_use(host, port):
        raise StackError(
            f"port {port} on {host} is in use (another server, or an earlier `ftflow up`?); "
            f"stop it or choose another with {option} N ({option} 0 picks a free one)"
        )
    return port


def base_env() -> dict[str, str]:
    """This process's environment as every child starts with it."""
    env = dict(os.environ)
    # Analytics off: it makes spurious "database is locked" errors on SQLite and phones home.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _die_with_parent_fn():
    """What a child runs before exec so it gets SIGTERM if `ftflow up` is killed (even by SIGKILL); Linux only.

    libc is loaded here, in the parent: a child that has dropped to another user may not read this Python's files.
    """
    if not sys.platform.startswith("linux"):
        return None
    # not needed by ftflow --help (ctypes): loaded when the command runs, so --help stays fast
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)

    def die_with_parent() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return die_with_parent


def start_service(svc: Service) -> None:
    svc.log_path.parent.mkdir(parents=True, exist_ok=True)
    # Another user's child drops root before the death signal is set (a change of user clears the death signal).
    as_user = {}
    if svc.user:
        # Unix-only, and not needed by ftflow --help: loaded only for a service run as another user
        import pwd

        as_user = {"user": svc.user, "group": pwd.getpwnam(svc.user).pw_gid, "extra_groups": []}
    with open(svc.log_path, "ab") as log:
        svc.proc = subprocess.Popen(
            svc.argv,
            env=svc.env,
            cwd=svc.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent_fn(),
            **as_user,  # type: ignore[call-overload]
        )


def http_get(url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None):
    """GET that returns the response, or None when nothing answers yet."""
    # heavy (httpx): loaded when the command runs, so ftflow --help stays light
    import httpx

    try:
        return httpx.get(url, timeout=timeout, auth=auth)
    except httpx.HTTPError:
        return None


def wait_healthy(services: list[Service], timeout: float = START_TIMEOUT_S) -> None:
    """Block until every service's health URL answers 200; fail fast if one exits."""
    deadline = time.monotonic() + timeout
    waiting = [s for s in services if s.health_url]
    while waiting:
        for svc in list(waiting):
            ensure_alive(svc)
            assert svc.health_url is not None, "only services with a health URL are waited for"
            r = http_get(svc.health_url)
            if r is not None and r.status_code == 200:
                waiting.remove(svc)
        if waiting and time.monotonic() > deadline:
            names = ", ".join(s.name for s in waiting)
            raise StackError(f"{names} not healthy after {timeout:.0f} s; see {waiting[0].log_path}")
        if waiting:
            time.sleep(0.5)


def ensure_alive(svc: Service) -> None:
    if svc.proc is not None and svc.proc.poll() is not None:
        raise StackError(
            f"{svc.name} exited with code {svc.proc.returncode}; last lines of {svc.log_path}:\n{svc.log_tail()}"
        )


def read_deployment(prefect_api: str, full_name: str, auth: tuple[str, str] | None = None) -> dict | None:
    """A deployment by 'flow/deployment' name through the REST API, or None."""
    r = http_get(f"{prefect_api}/deployments/name/{full_name}", auth=auth)
    return r.json() if r is not None and r.status_code == 200 else None


def wait_served(
    svc: Service | list[Service],
    prefect_api: str,
    names: list[str],
    since: dt.datetime,
    timeout: float = START_TIMEOUT_S,
    auth: tuple[str, str] | None = None,
) -> None:
    """Block until the serving process has registered every deployment (its schedules active: the last stop paused
    them) and it, or a worker, polled for their runs.

    `svc`: the serving process, or it and the workers; any of them exiting is an error.
    """
    deadline = time.monotonic() + timeout
    pending = list(names)
    services = svc if isinstance(svc, list) else [svc]
    while pending:
        for child in services:
            ensure_alive(child)
        for name in list(pending):
            dep = read_deployment(prefect_api, name, auth)
            polled = dep and not dep.get("paused") and dep.get("last_polled")  # paused: not yet registered again
            if polled and dt.datetime.fromisoformat(polled.replace("Z", "+00:00")) >= since:
                pending.remove(name)
        if pending and time.monotonic() > deadline:
            logs = ", ".join(str(child.log_path) for child in services)
            raise StackError(f"deployments {', '.join(pending)} not served after {timeout:.0f} s; see {logs}")
        if pending:
            time.sleep(0.5)


def stop_service(svc: Service, grace: float = STOP_GRACE_S) -> None:
    """The child's stop signal (SIGTERM) to its process group, wait, then SIGKILL whatever of its tree is left."""
    # third-party (psutil): loaded when the command runs, so ftflow --help stays light
    import psutil

    if svc.proc is None:
        return
    try:
        tree = psutil.Process(svc.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    _signal_group(svc.proc.pid, svc.stop_signal)
    try:
        svc.proc.wait(grace)
    except subprocess.TimeoutExpired:
        _signal_group(svc.proc.pid, signal.SIGKILL)
        try:
            svc.proc.wait(5)
        except subprocess.TimeoutExpired:  # stuck in the kernel (D state): nothing more to send it
            log.warning("%s (pid %d) did not exit after SIGKILL", svc.name, svc.proc.pid)
    # Descendants that moved to a session of their own (e.g. a flow run's process) are not in the group.
    alive = [p for p in tree if p.is_running()]
    for p in alive:
        _quietly(p.terminate)
    _, alive = psutil.wait_procs(alive, timeout=5)
    for p in alive:
        _quietly(p.kill)
    psutil.wait_procs(alive, timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _quietly(fn) -> None:
    # third-party (psutil): loaded when the command runs, so ftflow --help stays light
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):  # gone already, or not ours to signal
        fn()
