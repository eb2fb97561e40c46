"""`ftflow up`: a Prefect server, an MLflow server and the process serving the deployments, as one stack.

Each child runs in its own session (process group) so a Ctrl-C in the terminal reaches only
`ftflow up`, which then stops the children in order: the serving process first (it pauses its
schedules while the Prefect API is still there), then the servers. Stopping signals each group
by PID and then anything the child spawned that outlived it; nothing is left running.
Only the standard library is imported at module level: `ftflow --help` stays fast.

Authentication: with credentials in the clients' own variables (PREFECT_API_AUTH_STRING,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) both servers require them: Prefect's basic
auth (PREFECT_SERVER_API_AUTH_STRING) and MLflow's `basic-auth` app, whose admin is created from
them. Every child inherits them, so the served deployments, their flow runs, the CLI and the
serving process pass them. A host other than loopback is refused without them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_HOME = ".ftflow"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0


class StackError(RuntimeError):
    """A part of the stack could not start; the message says which, why and where its log is."""


# MLflow's old shipped admin password and other guessable ones: a server on the network refuses them.
WEAK_PASSWORDS = {"password1234", "password", "admin", "changeme"}
MIN_PASSWORD_CHARS = 12
CREDENTIAL_VARS = ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
HOW_TO_SET = ("export PREFECT_API_AUTH_STRING='admin:<password>' MLFLOW_TRACKING_USERNAME=admin "
              "MLFLOW_TRACKING_PASSWORD='<password>'")


@dataclass(frozen=True)
class Credentials:
    """The stack's login: Prefect's basic-auth user:password and the MLflow admin."""

    prefect_user: str
    prefect_password: str = field(repr=False)
    mlflow_user: str
    mlflow_password: str = field(repr=False)

    @property
    def prefect_auth_string(self) -> str:
        return f"{self.prefect_user}:{self.prefect_password}"


def read_credentials(env: dict[str, str] | None = None) -> Credentials | None:
    """The credentials from the clients' variables; None when none is set; an error naming what is missing or weak."""
    env = os.environ if env is None else env
    present = [v for v in CREDENTIAL_VARS if env.get(v)]
    if not present:
        return None
    missing = [v for v in CREDENTIAL_VARS if v not in present]
    if missing:
        raise ValueError(f"credentials are half set: {', '.join(missing)} missing (set all three: {HOW_TO_SET})")
    user, sep, password = env["PREFECT_API_AUTH_STRING"].partition(":")
    if not sep or not user or not password:
        raise ValueError("PREFECT_API_AUTH_STRING must be 'user:password' (Prefect's basic-auth string)")
    creds = Credentials(user, password, env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    for var, pw in (("PREFECT_API_AUTH_STRING", creds.prefect_password),
                    ("MLFLOW_TRACKING_PASSWORD", creds.mlflow_password)):
        if len(pw) < MIN_PASSWORD_CHARS or pw.lower() in WEAK_PASSWORDS:
            raise ValueError(f"the password in {var} is too weak: use at least {MIN_PASSWORD_CHARS} characters "
                             f"and not a default such as 'password1234' (e.g. `python -c 'import secrets; "
                             f"print(secrets.token_urlsafe(18))'`)")
    return creds


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach `host` (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it resolves for others too
        return False


@dataclass
class Service:
    """One child process of the stack and how to tell that it is up."""

    name: str
    argv: list[str]
    env: dict[str, str]
    health_url: str | None
    log_path: Path
    cwd: Path
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
        raise StackError(f"port {port} on {host} is in use (another server, or an earlier `ftflow up`?); "
                         f"stop it or choose another with {option} N ({option} 0 picks a free one)")
    return port


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    # Analytics off: it makes spurious "database is locked" errors on SQLite and phones home.
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def prefect_service(home: Path, host: str, port: int, root: Path, creds: Credentials | None = None) -> Service:
    """`prefect server start` with its SQLite database under `home`/prefect; basic auth when `creds` are given."""
    url = f"http://{host}:{port}"
    # The UI's bundle asks for its API at PREFECT_UI_API_URL, which defaults to port 4200, not --port.
    env = _base_env() | {"PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_API_HOST": host,
                         "PREFECT_SERVER_API_PORT": str(port)}
    # On every interface (0.0.0.0), a browser elsewhere needs a name it can reach; set PREFECT_UI_API_URL to override.
    shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    env.setdefault("PREFECT_UI_API_URL", f"http://{shown}:{port}/api")
    # A client setting must not leak into the server (it would talk to itself through a stale URL).
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)  # only the credentials checked above turn auth on
    if creds:
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.prefect_auth_string
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    return Service("prefect", argv, env, f"{url}/api/health", home / "logs" / "prefect.log", root)


def mlflow_service(store: Path, host: str, port: int, root: Path, home: Path,
                   creds: Credentials | None = None) -> Service:
    """`mlflow server` on the project's store: the same SQLite file and artifact folder as direct runs.

    `--default-artifact-root` is a file URI, so experiments made through the server keep their
    artifacts where direct SQLite runs find them (an `mlflow-artifacts:/` root would need the
    server to read them back); `--artifacts-destination` points at the same folder for clients
    that upload through the server's proxy. With `creds` the server runs MLflow's `basic-auth`
    app: its user database under `home`, its admin made from the credentials (never a default).
    """
    artifacts = (store / "artifacts").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    # Job execution off and one worker: ~0.5 GB and ~6 s to healthy instead of ~3 GB and ~20 s.
    env = _base_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://{host}:{port}"
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{(store / 'mlflow.db').resolve()}",
            "--default-artifact-root", artifacts.as_uri(), "--artifacts-destination", str(artifacts),
            "--host", host, "--port", str(port), "--workers", "1"]
    if creds:
        argv += ["--app-name", "basic-auth"]
        env |= mlflow_auth_env(home, creds)
    return Service("mlflow", argv, env, f"{url}/health", home / "logs" / "mlflow.log", root)


def mlflow_auth_env(home: Path, creds: Credentials) -> dict[str, str]:
    """The environment of MLflow's basic-auth app: a config file without secrets, the admin from `creds`."""
    ini = home / "mlflow-auth.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    # The password stays in the environment: nothing on disk holds it but MLflow's salted hash.
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{(home / 'mlflow-auth.db').resolve()}\n"
                   f"admin_username = {creds.mlflow_user}\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": creds.mlflow_user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": creds.mlflow_password,
            # Signs the UI's CSRF tokens; one per start is enough for one server.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or secrets.token_hex(32)}


def check_mlflow_login(svc: Service, url: str, creds: Credentials, home: Path) -> None:
    """Fail with the fix when the MLflow server refuses the admin (its user database has another password)."""
    r = http_get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10,
                 auth=(creds.mlflow_user, creds.mlflow_password))
    if r is None or r.status_code != 200:
        raise StackError(
            f"the MLflow server refuses user '{creds.mlflow_user}' with MLFLOW_TRACKING_PASSWORD "
            f"(HTTP {getattr(r, 'status_code', 'no answer')}): its user database {home / 'mlflow-auth.db'} was "
            f"made with another password. Use that password, change it through MLflow's update-password API, "
            f"or delete the file to start a new user database; see {svc.log_path}")


def serve_service(prefect_api: str, mlflow_uri: str, home: Path, root: Path, config: str | None = None,
                  timezone: str | None = None, extra_env: dict[str, str] | None = None) -> Service:
    """The process that registers the deployments and runs what the Prefect UI or a schedule asks for."""
    env = _base_env() | {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_uri,
                         "PREFECT_HOME": str(home / "prefect")} | (extra_env or {})
    argv = [sys.executable, "-m", "flows.deployments", "--exit-with-parent"] \
        + (["--config", config] if config else []) \
        + (["--timezone", timezone] if timezone else [])
    return Service("serve", argv, env, None, home / "logs" / "serve.log", root)


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if `ftflow up` itself is killed (even by SIGKILL).
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_service(svc: Service) -> None:
    svc.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.log_path, "ab") as log:
        svc.proc = subprocess.Popen(svc.argv, env=svc.env, cwd=svc.cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent)


def http_get(url: str, timeout: float = 2.0, auth: tuple[str, str] | None = None):
    """GET that returns the response, or None when nothing answers yet."""
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
        raise StackError(f"{svc.name} exited with code {svc.proc.returncode}; last lines of {svc.log_path}:\n"
                         f"{svc.log_tail()}")


def read_deployment(prefect_api: str, full_name: str, auth: tuple[str, str] | None = None) -> dict | None:
    """A deployment by 'flow/deployment' name through the REST API, or None."""
    r = http_get(f"{prefect_api}/deployments/name/{full_name}", auth=auth)
    return r.json() if r is not None and r.status_code == 200 else None


def wait_served(svc: Service, prefect_api: str, names: list[str], since: dt.datetime,
                timeout: float = START_TIMEOUT_S, auth: tuple[str, str] | None = None) -> None:
    """Block until the serving process has registered every deployment and polled for their runs."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        ensure_alive(svc)
        for name in list(pending):
            dep = read_deployment(prefect_api, name, auth)
            polled = dep and dep.get("last_polled")
            if polled and dt.datetime.fromisoformat(polled.replace("Z", "+00:00")) >= since:
                pending.remove(name)
        if pending and time.monotonic() > deadline:
            raise StackError(f"deployments {', '.join(pending)} not served after {timeout:.0f} s; see {svc.log_path}")
        if pending:
            time.sleep(0.5)


def stop_service(svc: Service, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the child's process group, wait, then SIGKILL whatever of its tree is left."""
    import psutil

    if svc.proc is None:
        return
    try:
        tree = psutil.Process(svc.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    _signal_group(svc.proc.pid, signal.SIGTERM)
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
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _quietly(fn) -> None:
    import psutil

    try:
        fn()
    except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone already, or not ours to signal
        pass


class Stack:
    """The embedded stack: start it, use its URLs, stop it (also as a context manager)."""

    def __init__(self, root: Path | str = ".", home: Path | str | None = None, host: str = "127.0.0.1",
                 prefect_port: int = DEFAULT_PREFECT_PORT, mlflow_port: int = DEFAULT_MLFLOW_PORT,
                 store: Path | str | None = None, config: str | None = None, timezone: str | None = None,
                 serve: bool = True, serve_env: dict[str, str] | None = None,
                 credentials: Credentials | None = None):
        from tasks.registry.tracking import store_dir

        self.root = Path(root).resolve()
        self.home = Path(home).resolve() if home else self.root / DEFAULT_HOME
        self.store = Path(store).resolve() if store else store_dir()
        self.host, self.config, self.timezone = host, config, timezone
        self.serve, self.serve_env = serve, serve_env or {}
        self.credentials = credentials
        self.prefect_port = pick_port(host, prefect_port, "--prefect-port")
        self.mlflow_port = pick_port(host, mlflow_port, "--mlflow-port")
        self.services: list[Service] = []

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_auth(self) -> tuple[str, str] | None:
        c = self.credentials
        return (c.prefect_user, c.prefect_password) if c else None

    def start(self, timeout: float = START_TIMEOUT_S) -> "Stack":
        """Start the servers side by side, wait for health, then serve the deployments and wait for that."""
        from flows.deployments import DEPLOYMENT_NAMES

        servers = [prefect_service(self.home, self.host, self.prefect_port, self.root, self.credentials),
                   mlflow_service(self.store, self.host, self.mlflow_port, self.root, self.home, self.credentials)]
        try:
            for svc in servers:
                start_service(svc)
                self.services.append(svc)
            wait_healthy(servers, timeout)
            if self.credentials:
                check_mlflow_login(servers[1], self.mlflow_url, self.credentials, self.home)
            if self.serve:
                svc = serve_service(self.prefect_api, self.mlflow_url, self.home, self.root, self.config,
                                    self.timezone, self.serve_env)
                since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
                start_service(svc)
                self.services.insert(0, svc)  # first to stop: it pauses schedules through a live API
                wait_served(svc, self.prefect_api, DEPLOYMENT_NAMES, since, timeout, self.prefect_auth)
                from flows.deployments import create_stack_automation

                create_stack_automation(self.prefect_api, self.config)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop every child, serving process first; one that will not stop does not keep the others running."""
        for svc in self.services:
            try:
                stop_service(svc, grace)
            except Exception as e:
                log.warning("stopping %s failed: %s: %s", svc.name, type(e).__name__, e)

    def check(self) -> None:
        """Raise StackError if a child has died."""
        for svc in self.services:
            ensure_alive(svc)

    def describe(self) -> str:
        lines = [f"Prefect UI:   {self.prefect_url}   (API {self.prefect_api})",
                 f"MLflow UI:    {self.mlflow_url}   (store {self.store})"]
        if self.serve:
            from flows.deployments import DEPLOYMENT_NAMES

            lines.append(f"deployments:  {', '.join(DEPLOYMENT_NAMES)}  (run them from the Prefect UI)")
        if self.credentials:
            lines.append(f"login:        Prefect '{self.credentials.prefect_user}' (the UI asks for user:password), "
                         f"MLflow '{self.credentials.mlflow_user}'; clients pass {', '.join(CREDENTIAL_VARS)}")
        else:
            lines.append("login:        none (loopback only; set credentials to require a login)")
        lines += [f"logs:         {self.home / 'logs'}",
                  f"clients:      export PREFECT_API_URL={self.prefect_api} MLFLOW_TRACKING_URI={self.mlflow_url}"]
        return "\n".join(lines)

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Stop(Exception):
    """Ctrl-C, SIGTERM or a closed terminal, turned into an exception so the clean-up runs."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def check_up_args(args) -> None:
    """Refuse a bad config or time zone here, before any server starts."""
    import zoneinfo

    from tasks.config import load_config

    if args.config:
        load_config(args.config)
    creds = read_credentials()
    if creds is None and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} opens both servers to every machine that reaches this one, and "
                         f"anyone could run flows that read files on this host or move the champion; set "
                         f"credentials first and both servers require them: {HOW_TO_SET}")
    try:
        zoneinfo.ZoneInfo(args.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--timezone '{args.timezone}' is not an IANA time zone; e.g. UTC, Europe/Berlin") from None


def cmd_up(args) -> int:
    """Run the stack in the foreground until Ctrl-C or SIGTERM."""
    try:
        check_up_args(args)
    except ValueError as e:  # ConfigError included: one clear message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Set explicitly: a shell that starts us in the background would otherwise leave SIGINT ignored.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        stack = Stack(home=args.home, host=args.host, prefect_port=args.prefect_port,
                      mlflow_port=args.mlflow_port, config=args.config, timezone=args.timezone,
                      serve=not args.no_serve, credentials=read_credentials())
        print(f"starting Prefect server, MLflow server{' and the deployments' if stack.serve else ''} ...",
              flush=True)
        stack.start()
    except StackError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except _Stop:
        return 130
    print("\n=== finetune-flow stack is up ===\n" + stack.describe() + "\n\nCtrl-C stops everything.", flush=True)
    try:
        while True:
            stack.check()
            time.sleep(1.0)
    except StackError as e:
        print(f"error: {e}\nstopping the rest of the stack", file=sys.stderr)
        return 1
    except _Stop:
        print("\nstopping ...", flush=True)
        return 0
    finally:
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the clean-up short (it is bounded)
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        print("stopped: every process the stack started has exited.", flush=True)


def add_up_command(sub) -> None:
    """Register `ftflow up` on the CLI's sub-parsers."""
    sp = sub.add_parser("up", help="start the Prefect UI, the MLflow UI and the served deployments; Ctrl-C stops all",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sp.add_argument("--config", default=None,
                    help="YAML config whose values are the deployments' default parameters (the Prefect UI's form); "
                    "the project's configs/quickstart.yaml when omitted")
    sp.add_argument("--timezone", default="UTC", help="IANA time zone of the nightly 02:00 run, e.g. Europe/Berlin")
    sp.add_argument("--host", default="127.0.0.1",
                    help="interface the servers listen on; any but loopback needs credentials "
                         "(PREFECT_API_AUTH_STRING=user:password, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), "
                         "which both servers then require")
    sp.add_argument("--prefect-port", type=int, default=DEFAULT_PREFECT_PORT, help="Prefect port; 0 picks a free one")
    sp.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT, help="MLflow port; 0 picks a free one")
    sp.add_argument("--home", default=DEFAULT_HOME, help="folder for the Prefect database and the logs")
    sp.add_argument("--no-serve", action="store_true", help="start only the two servers, not the deployments")
    sp.set_defaults(func=cmd_up)
