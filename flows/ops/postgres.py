"""PostgreSQL as the stack's database: a server's address (`ftflow up --database`), or a local one (`--postgres`).

The stack keeps three stores on one server, each in its own database: `prefect` (the Prefect
server, through asyncpg), `mlflow` (MLflow's backend store, through psycopg 3) and `predictions`
(the prediction log and feedback, through psycopg 3). `ensure_databases` creates the ones missing.

`LocalPostgres` is a server for a team of one, from Debian's `postgresql` server binaries: `initdb`
in the stack's home (as the `postgres` OS user when `ftflow up` runs as root: the server refuses
root), listening on loopback only, on a free port, with the unix socket inside its data folder. Its
login is `ftflow` with a password generated at each start (FTFLOW_POSTGRES_PASSWORD to choose it):
the stack logs in through the socket by peer authentication (only the OS user running the stack
is mapped to `ftflow`) and sets it as a SCRAM verifier, so the password itself is never on disk,
in a command line or in a log. TCP on loopback needs the password.

Only the standard library is imported at module level: `ftflow --help` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from flows.ops.supervisor import (
    START_TIMEOUT_S,
    STOP_GRACE_S,
    Service,
    StackError,
    base_env,
    ensure_alive,
    pick_port,
    start_service,
    stop_service,
)

DATABASES = ("prefect", "mlflow", "predictions", "optuna")  # optuna: search.storage's studies (search.parallel)
DB_USER = "ftflow"
DATABASE_URL_ENV = "FTFLOW_DATABASE_URL"
PASSWORD_ENV = "FTFLOW_POSTGRES_PASSWORD"
BIN_ENV = "FTFLOW_POSTGRES_BIN"  # a folder with initdb and postgres, when not Debian's
SERVER_OS_USER = "postgres"  # the OS user that runs the server when the stack runs as root
INSTALL_HINT = "install the server (Debian/Ubuntu: `sudo apt-get install postgresql`)"


@dataclass(frozen=True)
class Database:
    """A PostgreSQL server the stack's stores live on, and its login (the password never shown)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    query: str = ""  # passed on to every URL as it is, e.g. sslmode=require

    def url(self, database: str, driver: str = "psycopg") -> str:
        """The SQLAlchemy URL of one database on this server, with the password."""
        login = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        return f"postgresql+{driver}://{login}@{self.host}:{self.port}/{database}" + (
            f"?{self.query}" if self.query else ""
        )

    @property
    def prefect_url(self) -> str:
        return self.url("prefect", "asyncpg")

    @property
    def mlflow_url(self) -> str:
        return self.url("mlflow")

    @property
    def predictions_url(self) -> str:
        return self.url("predictions")

    def shown(self, database: str = "", driver: str = "psycopg") -> str:
        """The URL as logs and the terminal show it: the password masked."""
        login = quote(self.user, safe="") + (":***" if self.password else "")
        return f"postgresql+{driver}://{login}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres", timeout_s: int = 10):
        """A psycopg connection (autocommit) to one database on this server."""
        # heavy (psycopg): loaded when the command runs, so ftflow --help stays light
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password or None,
            dbname=database,
            connect_timeout=timeout_s,
            autocommit=True,
        )


def parse_database_url(url: str) -> Database:
    """The server of `url` (postgresql://user:${PASSWORD_VAR}@host:port); `${NAME}` expanded from the environment.

    The URL names a server, not a database: the stack uses the databases prefect, mlflow and
    predictions on it. Errors show the URL with its password masked.
    """
    # not needed by ftflow --help (tasks.secrets): loaded when the command runs, so --help stays fast
    from tasks.secrets import expand_references, redact_url

    # Split first, expand each part after: an expanded password may hold any character (/, @, :).
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"--database {shown}: not a PostgreSQL URL; e.g. postgresql://ftflow:${{PGPASSWORD}}@db:5432")
    if parts.path not in ("", "/"):
        raise ValueError(
            f"--database {shown}: name the server only (no /{parts.path.strip('/')}): the stack keeps its "
            f"stores in the databases {', '.join(DATABASES)} on it"
        )
    try:
        port = parts.port or 5432
    except ValueError:
        raise ValueError(f"--database {shown}: the port is not a number") from None
    if not parts.hostname or not parts.username:
        raise ValueError(f"--database {shown}: give the user and the host, e.g. postgresql://ftflow@db:5432")

    def expanded(part: str) -> str:
        return expand_references(unquote(part), "--database")[0]

    return Database(parts.hostname, port, expanded(parts.username), expanded(parts.password or ""), parts.query)


def ensure_databases(db: Database, names: tuple[str, ...] = DATABASES) -> list[str]:
    """Create the databases of `names` missing on the server; the ones created. StackError when it cannot."""
    # heavy (psycopg): loaded when the command runs, so ftflow --help stays light
    import psycopg
    from psycopg import sql

    from tasks.secrets import redact_text

    try:
        with db.connect("postgres") as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            missing = [n for n in names if n not in existing]
            for name in missing:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as e:
        raise StackError(
            f"PostgreSQL at {db.shown()}: {redact_text(str(e).strip(), (db.password,))}; the stack needs the "
            f"databases {', '.join(names)} there (a user allowed to create them, or an administrator's "
            f"`CREATE DATABASE ... OWNER {db.user}` for each)"
        ) from None
    return missing


def server_bin_dir() -> Path:
    """The folder of `initdb` and `postgres`: FTFLOW_POSTGRES_BIN, Debian's newest /usr/lib/postgresql/N/bin, or PATH."""
    candidates = [Path(os.environ[BIN_ENV])] if os.environ.get(BIN_ENV) else []
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    candidates += debian
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise StackError(f"no PostgreSQL server binaries (initdb, postgres) found: {INSTALL_HINT}, or set {BIN_ENV}")


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _server_user() -> str | None:
    """The OS user the server runs as: `postgres` when we are root (PostgreSQL refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise StackError(
            f"running as root, PostgreSQL must run as another OS user, and '{SERVER_OS_USER}' does not exist: "
            f"{INSTALL_HINT} (it creates the user), or run `ftflow up` as an ordinary user"
        ) from None
    return SERVER_OS_USER


class LocalPostgres:
    """A PostgreSQL server in `data_dir` on loopback: start (initdb the first time), URLs, stop.

    `Stack` starts it first and stops it last; the test suite starts one as a session fixture.
    """

    def __init__(
        self,
        data_dir: Path | str,
        port: int = 0,
        host: str = "127.0.0.1",
        password: str | None = None,
        log_path: Path | None = None,
        settings: dict[str, str] | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = pick_port(host, port, "--postgres-port")
        self.password = password or os.environ.get(PASSWORD_ENV) or secrets.token_urlsafe(24)
        self.log_path = log_path or self.data_dir.parent / "logs" / "postgres.log"
        self.settings = settings or {}  # more server settings (-c name=value), e.g. the tests' fsync=off
        self.os_user = _server_user()
        self.service: Service | None = None

    def __repr__(self) -> str:
        return f"LocalPostgres({self.data_dir}, {self.host}:{self.port})"

    @property
    def database(self) -> Database:
        return Database(self.host, self.port, DB_USER, self.password)

    def _run_as_server_user(self, argv: list[str], what: str) -> None:
        as_user: dict = {}
        if self.os_user:
            as_user = {"user": self.os_user, "group": pwd.getpwnam(self.os_user).pw_gid, "extra_groups": []}
        proc = subprocess.run(
            argv,
            cwd="/",
            env=base_env() | {"LC_ALL": "C.UTF-8"},
            capture_output=True,
            text=True,
            timeout=120,
            **as_user,
        )
        if proc.returncode != 0:
            raise StackError(f"{what} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")

    def init(self) -> bool:
        """`initdb` in data_dir unless it holds a cluster already; True when it made one."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        bin_dir = server_bin_dir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.os_user:
            shutil.chown(self.data_dir, self.os_user, self.os_user)
            try:
                self._run_as_server_user(["test", "-w", str(self.data_dir)], "checking the data folder")
            except StackError:
                raise StackError(
                    f"the OS user '{self.os_user}' (PostgreSQL refuses root) cannot reach {self.data_dir}: a folder "
                    f"above it is closed to other users (e.g. /root or a 0700 temp folder); give --home a folder "
                    f"other users can traverse (chmod o+x on its parents) or run `ftflow up` as an ordinary user"
                ) from None
        # No password here: the first start sets one through the socket (peer authentication).
        self._run_as_server_user(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                DB_USER,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            f"initdb in {self.data_dir}",
        )
        return True

    def _configure(self) -> None:
        """Who may log in: the stack's OS user through the socket (peer), `ftflow` with its password over loopback."""
        me = pwd.getpwuid(os.geteuid()).pw_name
        (self.data_dir / "pg_ident.conf").write_text(f"# written by ftflow up at each start\nstack {me} {DB_USER}\n")
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by ftflow up at each start: the socket (in this folder) for the OS user running the\n"
            "# stack, the password over loopback; nothing else\n"
            f"local all {DB_USER} peer map=stack\n"
            f"host all {DB_USER} 127.0.0.1/32 scram-sha-256\n"
            f"host all {DB_USER} ::1/128 scram-sha-256\n"
        )

    def _service(self) -> Service:
        argv = [
            str(server_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"port={self.port}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "password_encryption=scram-sha-256",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        env = base_env() | {"LC_ALL": "C.UTF-8"}
        return Service(
            "postgres", argv, env, None, self.log_path, self.data_dir, user=self.os_user, stop_signal=signal.SIGINT
        )

    def _socket_connect(self, timeout_s: int = 5):
        # heavy (psycopg): loaded when the command runs, so ftflow --help stays light
        import psycopg

        return psycopg.connect(
            host=str(self.data_dir), port=self.port, user=DB_USER, dbname="postgres", connect_timeout=timeout_s
        )

    def start(self, timeout: float = START_TIMEOUT_S) -> LocalPostgres:
        """initdb (the first time), start the server, set this start's password, create the three databases."""
        self.init()
        self._configure()
        self.service = self._service()
        start_service(self.service)
        try:
            self.wait_ready(timeout)
            self._set_password()
            ensure_databases(self.database)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to see
                self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until the server accepts a login through its socket; StackError if it exits or times out."""
        # heavy (psycopg): loaded when the command runs, so ftflow --help stays light
        import psycopg

        assert self.service is not None, "start() first"
        deadline = time.monotonic() + timeout
        while True:
            ensure_alive(self.service)
            try:
                with self._socket_connect(2):
                    return
            except psycopg.OperationalError as e:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"PostgreSQL not ready after {timeout:.0f} s ({str(e).strip()}); see {self.log_path}"
                    ) from None
            time.sleep(0.2)

    def _set_password(self) -> None:
        # heavy (psycopg): loaded when the command runs, so ftflow --help stays light
        from psycopg import sql

        with self._socket_connect() as conn:
            # The SCRAM verifier, computed here: the password itself never reaches the server's log.
            verifier = conn.pgconn.encrypt_password(self.password.encode(), DB_USER.encode(), b"scram-sha-256")
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(DB_USER), sql.Literal(verifier.decode()))
            )
            conn.commit()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """A fast shutdown (SIGINT: sessions end, the data is checkpointed)."""
        if self.service is not None:
            stop_service(self.service, grace)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
