"""`ftflow up`'s stack: which servers (Prefect, MLflow), with which credentials, and the served deployments.

`Stack.start` starts the servers side by side, waits for their health, then the process that
serves the deployments, and the automation; `Stack.stop` stops the serving process first (it
pauses its schedules while the Prefect API is still there), then the servers.

Several configs: each one's deployments (named after its model: `fine-tune/manual-<model>`) and
retrain automation. Workers (`workers=N`): the deployments are registered to the process work pool
`ftflow-process` instead of served, and N `prefect worker` processes, children like the servers
(logs `worker-<i>.log`), run their flow runs one at a time each, in the project's root. Starting and
stopping the children is flows/ops/supervisor.py's; the command is flows/ops/up_cli.py.
Only the standard library is imported at module level: `ftflow --help` stays fast.

Authentication: with credentials in the clients' own variables (PREFECT_API_AUTH_STRING,
MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) both servers require them: Prefect's basic
auth (PREFECT_SERVER_API_AUTH_STRING) and MLflow's `basic-auth` app, whose admin is created from
them. Every child inherits them, so the served deployments, their flow runs, the CLI and the
serving process pass them. A host other than loopback is refused without them.

Browsers: Prefect's API answers cross-origin calls only from the UI's own origins (`prefect_origins`) and those
listed in PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS, never `*`: a page on another site cannot drive it through a
browser on this machine, which matters most on loopback, where no login is asked.

Database: SQLite files by default (Prefect's under the home, MLflow's in the project's store). With
a PostgreSQL server (`database`, from `ftflow up --database URL`, or `postgres=True`, a local one in
the home that starts first and stops last: flows/ops/postgres.py) the three stores live in its
databases prefect, mlflow and predictions, and a fourth, optuna, is there for `search.storage`; MLflow then proxies the artifacts (`--serve-artifacts`,
kept in the home), so a client needs only the tracking URL. The URLs, password included, reach the
children through their environment only: never a command line, a file or a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from flows.ops.postgres import PASSWORD_ENV, Database, LocalPostgres, ensure_databases
from flows.ops.supervisor import (
    START_TIMEOUT_S,
    STOP_GRACE_S,
    Service,
    StackError,
    base_env,
    ensure_alive,
    http_get,
    pick_port,
    start_service,
    stop_service,
    wait_healthy,
    wait_served,
)
from tasks.platform.network import is_loopback

log = logging.getLogger(__name__)

DEFAULT_HOME = ".ftflow"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_MLFLOW_PORT = 5000


# MLflow's old shipped admin password and other guessable ones: a server on the network refuses them.
WEAK_PASSWORDS = {"password1234", "password", "admin", "changeme"}
MIN_PASSWORD_CHARS = 12
CREDENTIAL_VARS = ("PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
HOW_TO_SET = (
    "export PREFECT_API_AUTH_STRING='admin:<password>' MLFLOW_TRACKING_USERNAME=admin "
    "MLFLOW_TRACKING_PASSWORD='<password>'"
)


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


def read_credentials(env: Mapping[str, str] | None = None) -> Credentials | None:
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
    for var, pw in (
        ("PREFECT_API_AUTH_STRING", creds.prefect_password),
        ("MLFLOW_TRACKING_PASSWORD", creds.mlflow_password),
    ):
        if len(pw) < MIN_PASSWORD_CHARS or pw.lower() in WEAK_PASSWORDS:
            raise ValueError(
                f"the password in {var} is too weak: use at least {MIN_PASSWORD_CHARS} characters "
                f"and not a default such as 'password1234' (e.g. `python -c 'import secrets; "
                f"print(secrets.token_urlsafe(18))'`)"
            )
    return creds


CORS_ORIGINS_ENV = "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"
CORS_ORIGINS_ALIASES = (CORS_ORIGINS_ENV, "PREFECT_SERVER_CORS_ALLOWED_ORIGINS")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def extra_origins(env: Mapping[str, str] | None = None) -> list[str]:
    """The origins the operator adds in PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS; an error for `*` or a non-origin."""
    env = os.environ if env is None else env
    var = next((v for v in CORS_ORIGINS_ALIASES if env.get(v)), None)
    if var is None:
        return []
    origins = [o.strip().rstrip("/") for o in env[var].split(",") if o.strip()]
    for origin in origins:
        if origin == "*":
            raise ValueError(
                f"{var}='*' lets every web page a browser here opens call the Prefect API; `ftflow up` allows "
                f"the UI's own origins and adds the ones you list, e.g. {var}=https://dashboard.example.com"
            )
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ValueError(f"{var}: '{origin}' is not an origin; write scheme://host[:port], e.g. https://a.example")
    return origins


def prefect_origins(host: str, port: int, ui_api_url: str, extra: list[str] | None = None) -> list[str]:
    """The origins allowed to call the Prefect API from a browser: the UI's own, then `extra`.

    The UI's own: its address on `host` (on loopback every spelling a browser may use: 127.0.0.1,
    localhost, [::1]; on every interface this machine's full and short names) and the origin of the API
    URL the UI is told (PREFECT_UI_API_URL, e.g. a reverse proxy's).
    """
    if is_loopback(host):
        hosts = list(LOOPBACK_NAMES)
    elif host in ("0.0.0.0", "::"):
        hosts = [socket.getfqdn(), socket.gethostname()]
    else:
        hosts = [f"[{host}]" if ":" in host else host]
    origins = [f"http://{h}:{port}" for h in hosts]
    api = urlsplit(ui_api_url)
    if api.scheme and api.netloc:
        origins.append(f"{api.scheme}://{api.netloc}")
    return list(dict.fromkeys([*origins, *(extra or [])]))  # in order, once each


def prefect_service(
    home: Path, host: str, port: int, root: Path, creds: Credentials | None = None, database: Database | None = None
) -> Service:
    """`prefect server start`: its database in PostgreSQL (`database`) or SQLite under `home`/prefect; basic auth
    when `creds` are given."""
    url = f"http://{host}:{port}"
    # The UI's bundle asks for its API at PREFECT_UI_API_URL, which defaults to port 4200, not --port.
    env = base_env() | {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
    }
    # On every interface (0.0.0.0), a browser elsewhere needs a name it can reach; set PREFECT_UI_API_URL to override.
    shown = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    env.setdefault("PREFECT_UI_API_URL", f"http://{shown}:{port}/api")
    # Prefect allows every origin (`*`): any web page open in a browser here could drive a loopback API
    # that has no login. Only the UI's own origins, and those the operator lists, may call it cross-origin.
    origins = prefect_origins(host, port, env["PREFECT_UI_API_URL"], extra_origins(env))
    for alias in CORS_ORIGINS_ALIASES:  # the first one set wins in Prefect's settings: only ours is left
        env.pop(alias, None)
    env[CORS_ORIGINS_ENV] = ",".join(origins)
    # A client setting must not leak into the server (it would talk to itself through a stale URL).
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)  # only the credentials checked above turn auth on
    if creds:
        env["PREFECT_SERVER_API_AUTH_STRING"] = creds.prefect_auth_string
    if database:
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)  # the newer name would win over ours
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database.prefect_url
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    return Service("prefect", argv, env, f"{url}/api/health", home / "logs" / "prefect.log", root)


def mlflow_service(
    store: Path,
    host: str,
    port: int,
    root: Path,
    home: Path,
    creds: Credentials | None = None,
    database: Database | None = None,
) -> Service:
    """`mlflow server` on the project's store: the same SQLite file and artifact folder as direct runs.

    With `database`, the backend store is its `mlflow` database (the URL in MLFLOW_BACKEND_STORE_URI,
    not the command line, where `ps` shows it) and the server proxies the artifacts: new experiments
    get `mlflow-artifacts:/` roots kept under `home`/mlflow-artifacts, so clients need only its URL.

    `--default-artifact-root` is a file URI, so experiments made through the server keep their
    artifacts where direct SQLite runs find them (an `mlflow-artifacts:/` root would need the
    server to read them back); `--artifacts-destination` points at the same folder for clients
    that upload through the server's proxy. With `creds` the server runs MLflow's `basic-auth`
    app: its user database under `home`, its admin made from the credentials (never a default).
    """
    # Job execution off and one worker: ~0.5 GB and ~6 s to healthy instead of ~3 GB and ~20 s.
    env = base_env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    url = f"http://{host}:{port}"
    argv = [sys.executable, "-m", "mlflow", "server"]
    if database:
        artifacts = (home / "mlflow-artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        env["MLFLOW_BACKEND_STORE_URI"] = database.mlflow_url
        argv += ["--serve-artifacts", "--default-artifact-root", "mlflow-artifacts:/"]
    else:
        artifacts = (store / "artifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        env.pop("MLFLOW_BACKEND_STORE_URI", None)
        argv += [
            "--backend-store-uri",
            f"sqlite:///{(store / 'mlflow.db').resolve()}",
            "--default-artifact-root",
            artifacts.as_uri(),
        ]
    argv += [
        "--artifacts-destination",
        str(artifacts),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if creds:
        argv += ["--app-name", "basic-auth"]
        env |= mlflow_auth_env(home, creds)
    return Service("mlflow", argv, env, f"{url}/health", home / "logs" / "mlflow.log", root)


def mlflow_auth_env(home: Path, creds: Credentials) -> dict[str, str]:
    """The environment of MLflow's basic-auth app: a config file without secrets, the admin from `creds`."""
    from tasks.io import write_text  # pandas behind it: kept off `ftflow --help`'s imports

    ini = home / "mlflow-auth.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    # The password stays in the environment: nothing on disk holds it but MLflow's salted hash.
    write_text(
        ini,
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{(home / 'mlflow-auth.db').resolve()}\n"
        f"admin_username = {creds.mlflow_user}\n",
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": creds.mlflow_user,
        "MLFLOW_AUTH_ADMIN_PASSWORD": creds.mlflow_password,
        # Signs the UI's CSRF tokens; one per start is enough for one server.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32),
    }


def check_mlflow_login(svc: Service, url: str, creds: Credentials, home: Path) -> None:
    """Fail with the fix when the MLflow server refuses the admin (its user database has another password)."""
    r = http_get(
        f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
        timeout=10,
        auth=(creds.mlflow_user, creds.mlflow_password),
    )
    if r is None or r.status_code != 200:
        raise StackError(
            f"the MLflow server refuses user '{creds.mlflow_user}' with MLFLOW_TRACKING_PASSWORD "
            f"(HTTP {getattr(r, 'status_code', 'no answer')}): its user database {home / 'mlflow-auth.db'} was "
            f"made with another password. Use that password, change it through MLflow's update-password API, "
            f"or delete the file to start a new user database; see {svc.log_path}"
        )


def client_env(
    prefect_api: str, mlflow_uri: str, home: Path, extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the processes that run flows (the serving process, the workers): the stack's URLs."""
    return (
        base_env()
        | {"PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": mlflow_uri, "PREFECT_HOME": str(home / "prefect")}
        | (extra_env or {})
    )


def serve_service(
    prefect_api: str,
    mlflow_uri: str,
    home: Path,
    root: Path,
    configs: list[str] | None = None,
    timezone: str | None = None,
    extra_env: dict[str, str] | None = None,
    work_pool: str | None = None,
) -> Service:
    """The process that registers the deployments and runs what the Prefect UI or a schedule asks for.

    With `work_pool` it registers them to that pool for its workers, and pauses their schedules at the stop.
    """
    argv = (
        [sys.executable, "-m", "flows.deployments", "--exit-with-parent"]
        + [arg for config in configs or [] for arg in ("--config", config)]
        + (["--timezone", timezone] if timezone else [])
        + (["--work-pool", work_pool] if work_pool else [])
    )
    env = client_env(prefect_api, mlflow_uri, home, extra_env)
    return Service("serve", argv, env, None, home / "logs" / "serve.log", root)


def worker_service(
    index: int,
    prefect_api: str,
    mlflow_uri: str,
    home: Path,
    root: Path,
    work_pool: str,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """`prefect worker start` on the process pool: one flow run at a time, in a subprocess started in `root`."""
    name = f"worker-{index}"
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", work_pool, "--type", "process"]
    argv += ["--name", f"ftflow-{name}", "--limit", "1"]
    env = client_env(prefect_api, mlflow_uri, home, extra_env)
    return Service(name, argv, env, None, home / "logs" / f"{name}.log", root)


def worker_threads(workers: int, env: Mapping[str, str] | None = None) -> int:
    """The CPU threads each of `workers` workers' flow runs use: OMP_NUM_THREADS when set, else its share of the cores.

    Workers on one machine would otherwise each start one thread per core and slow each other down.
    """
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, workers))


class Stack:
    """The embedded stack: start it, use its URLs, stop it (also as a context manager)."""

    def __init__(
        self,
        root: Path | str = ".",
        home: Path | str | None = None,
        host: str = "127.0.0.1",
        prefect_port: int = DEFAULT_PREFECT_PORT,
        mlflow_port: int = DEFAULT_MLFLOW_PORT,
        store: Path | str | None = None,
        config: str | None = None,
        timezone: str | None = None,
        serve: bool = True,
        configs: list[str] | None = None,
        workers: int = 0,
        serve_env: dict[str, str] | None = None,
        credentials: Credentials | None = None,
        database: Database | None = None,
        postgres: bool = False,
        postgres_port: int = 0,
    ):
        # not needed by ftflow --help (tasks.platform.tracking): loaded when the command runs, so --help stays fast
        from tasks.platform.tracking import store_dir

        self.root = Path(root).resolve()
        self.home = Path(home).resolve() if home else self.root / DEFAULT_HOME
        self.store = Path(store).resolve() if store else store_dir()
        self.host, self.timezone = host, timezone
        # Each config's deployments and automation; the quickstart's without one.
        self.configs = list(configs or ([config] if config else []))
        self.serve, self.serve_env = serve, serve_env or {}
        if workers < 0 or (workers and not serve):
            raise ValueError("workers run the served deployments: give --workers N (N >= 1) without --no-serve")
        self.workers = workers
        self.credentials = credentials
        if database and postgres:
            raise ValueError("either a database server (--database) or a local one (--postgres), not both")
        # A local PostgreSQL in the home: the first to start, the last to stop.
        self.postgres = (
            LocalPostgres(self.home / "postgres", postgres_port, log_path=self.home / "logs" / "postgres.log")
            if postgres
            else None
        )
        self.database = self.postgres.database if self.postgres else database
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

    @property
    def work_pool(self) -> str | None:
        """The process work pool the workers poll; None when the deployments are served."""
        # third-party (psutil, pydantic, yaml via flows.deployments): loaded when the command runs, so ftflow --help stays light
        from flows.deployments import WORK_POOL

        return WORK_POOL if self.workers else None

    def model_names(self) -> list[str | None]:
        """The registered model of each config; [None] for one config (its deployments keep their plain names)."""
        # third-party (pydantic, yaml via tasks.config): loaded when the command runs, so ftflow --help stays light
        from tasks.config import load_config

        if len(self.configs) < 2:
            return [None]
        return [load_config(path).registry.model_name for path in self.configs]

    def deployment_names(self) -> list[str]:
        # third-party (psutil, pydantic, yaml via flows.deployments): loaded when the command runs, so ftflow --help stays light
        from flows.deployments import stack_deployment_names

        return stack_deployment_names(self.model_names())

    def start(self, timeout: float = START_TIMEOUT_S) -> Stack:
        """Start the servers side by side, wait for health, then serve the deployments and wait for that."""
        db = self.database
        servers = [
            prefect_service(self.home, self.host, self.prefect_port, self.root, self.credentials, db),
            mlflow_service(self.store, self.host, self.mlflow_port, self.root, self.home, self.credentials, db),
        ]
        try:
            if self.postgres:
                self.postgres.start(timeout)
            elif db:
                ensure_databases(db)
            for svc in servers:
                start_service(svc)
                self.services.append(svc)
            wait_healthy(servers, timeout)
            if self.credentials:
                check_mlflow_login(servers[1], self.mlflow_url, self.credentials, self.home)
            if self.serve:
                # The flows' prediction log (the monitor reads it) in the database, unless the caller says otherwise.
                serve_env = ({"FTFLOW_PREDICTION_LOG": db.predictions_url} if db else {}) | self.serve_env
                api, uri, pool = self.prefect_api, self.mlflow_url, self.work_pool
                svc = serve_service(api, uri, self.home, self.root, self.configs, self.timezone, serve_env, pool)
                # Each worker's flow runs (torch, tokenizers, ONNX Runtime) get the worker's share of the cores.
                threads = {"OMP_NUM_THREADS": str(worker_threads(self.workers, base_env() | serve_env))}
                workers = [
                    worker_service(i, api, uri, self.home, self.root, pool, serve_env | threads)
                    for i in range(1, self.workers + 1)
                    if pool
                ]
                since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
                for child in [svc, *workers]:
                    start_service(child)
                # The serving process first to stop: it pauses schedules through a live API; the workers next.
                self.services[:0] = [svc, *workers]
                names = self.deployment_names()
                wait_served([svc, *workers], api, names, since, timeout, self.prefect_auth)
                # third-party (psutil, pydantic, yaml via flows.deployments): loaded when the command runs, so ftflow --help stays light
                from flows.deployments import create_stack_automation

                configs: list[str | None] = list(self.configs) or [None]  # None: the quickstart's
                for config in configs:
                    create_stack_automation(api, config, qualify=len(configs) > 1)
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
        if self.postgres:  # last: the servers above close their sessions first
            try:
                self.postgres.stop(grace)
            except Exception as e:
                log.warning("stopping postgres failed: %s: %s", type(e).__name__, e)

    def check(self) -> None:
        """Raise StackError if a child has died."""
        for svc in self.services:
            ensure_alive(svc)
        if self.postgres and self.postgres.service:
            ensure_alive(self.postgres.service)

    def describe(self) -> str:
        db = self.database
        if db:
            where = "PostgreSQL in " + str(self.postgres.data_dir) if self.postgres else "PostgreSQL"
            lines = [
                f"Prefect UI:   {self.prefect_url}   (API {self.prefect_api})",
                f"MLflow UI:    {self.mlflow_url}   (artifacts proxied, kept in {self.home / 'mlflow-artifacts'})",
                f"database:     {where}: {db.shown('prefect', 'asyncpg')}, {db.shown('mlflow')}, "
                f"{db.shown('predictions')}, {db.shown('optuna')} (search.storage)",
            ]
        else:
            lines = [
                f"Prefect UI:   {self.prefect_url}   (API {self.prefect_api})",
                f"MLflow UI:    {self.mlflow_url}   (store {self.store})",
            ]
        if self.serve:
            # third-party (psutil, pydantic, yaml via flows.deployments): loaded when the command runs, so ftflow --help stays light
            from flows.deployments import deployment_names

            for model in self.model_names():
                names = ", ".join(deployment_names(model))
                lines.append(f"deployments:  {names}  (run them from the Prefect UI)")
            if self.workers:
                logs = ", ".join(f"worker-{i}.log" for i in range(1, self.workers + 1))
                lines.append(
                    f"workers:      {self.workers} on process work pool '{self.work_pool}', one flow run at a time "
                    f"each, {worker_threads(self.workers, base_env() | self.serve_env)} CPU thread(s) each "
                    f"(OMP_NUM_THREADS; logs {logs})"
                )
                # third-party (pydantic via tasks.config): loaded when the command runs, so ftflow --help stays light
                from tasks.modelling.study import TRIALS_DEPLOYMENT

                lines.append(
                    f"search:       a training run with search.parallel N runs N-1 flow runs of {TRIALS_DEPLOYMENT} "
                    "on these workers, sharing its Optuna study in search.storage"
                )
        if self.credentials:
            lines.append(
                f"login:        Prefect '{self.credentials.prefect_user}' (the UI asks for user:password), "
                f"MLflow '{self.credentials.mlflow_user}'; clients pass {', '.join(CREDENTIAL_VARS)}"
            )
        else:
            lines.append("login:        none (loopback only; set credentials to require a login)")
        lines += [
            f"logs:         {self.home / 'logs'}",
            f"clients:      export PREFECT_API_URL={self.prefect_api} MLFLOW_TRACKING_URI={self.mlflow_url}",
        ]
        if db:
            lines.append(
                f"              and FTFLOW_PREDICTION_LOG={db.shown('predictions')} for the service "
                + (f"(the password: set {PASSWORD_ENV} before `ftflow up`)" if self.postgres else "(your password)")
            )
        return "\n".join(lines)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
