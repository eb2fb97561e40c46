"""`ftflow up`: the stack in the foreground until Ctrl-C, SIGTERM or a closed terminal stops it.

Only the standard library is imported at module level: `ftflow --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from flows.ops.postgres import DATABASE_URL_ENV, Database, parse_database_url
from flows.ops.stack import (
    DEFAULT_HOME,
    DEFAULT_MLFLOW_PORT,
    DEFAULT_PREFECT_PORT,
    HOW_TO_SET,
    Stack,
    extra_origins,
    read_credentials,
)
from flows.ops.supervisor import StackError
from tasks.platform.network import is_loopback


class _Stop(Exception):
    """Ctrl-C, SIGTERM or a closed terminal, turned into an exception so the clean-up runs."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def database_of(args) -> Database | None:
    """The PostgreSQL server of --database (or FTFLOW_DATABASE_URL), `${NAME}` expanded; None without one."""
    url = args.database if args.database is not None else os.environ.get(DATABASE_URL_ENV)
    if not url or args.postgres:
        return None
    # not needed by ftflow --help (tasks.secrets): loaded when the command runs, so --help stays fast
    from tasks.secrets import literal_credentials

    if "--database" in sys.argv and literal_credentials(url):
        print(
            "note: --database holds a literal password, which `ps` and the shell's history show; write it as "
            "'postgresql://user:${PGPASSWORD}@host' (single quotes) with PGPASSWORD exported, or use "
            f"{DATABASE_URL_ENV}",
            file=sys.stderr,
        )
    return parse_database_url(url)


def check_up_args(args) -> None:
    """Refuse a bad config, time zone or database URL here, before any server starts."""
    # third-party (pydantic, yaml via tasks.config): loaded when the command runs, so ftflow --help stays light
    import zoneinfo

    from tasks.config import load_config

    models: dict[str, str] = {}
    for path in args.config or []:
        model = load_config(path).registry.model_name
        if model in models:
            raise ValueError(
                f"--config {models[model]} and --config {path} both register the model '{model}'; each config of "
                f"a stack serves its own model (its deployments and automation are named after it): give each "
                f"config its own registry.model_name"
            )
        models[model] = path
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: give the number of workers, 1 or more (0: none, served)")
    if args.workers and args.no_serve:
        raise ValueError("--workers runs the deployments, --no-serve starts none: give one of them")
    creds = read_credentials()
    extra_origins()
    if creds is None and not is_loopback(args.host):
        raise ValueError(
            f"--host {args.host} opens both servers to every machine that reaches this one, and "
            f"anyone could run flows that read files on this host or move the champion; set "
            f"credentials first and both servers require them: {HOW_TO_SET}"
        )
    try:
        zoneinfo.ZoneInfo(args.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"--timezone '{args.timezone}' is not an IANA time zone; e.g. UTC, Europe/Berlin") from None
    if args.postgres and args.database:
        raise ValueError("--postgres starts a local PostgreSQL, --database names a server: give one of them")
    database_of(args)


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
        stack = Stack(
            home=args.home,
            host=args.host,
            prefect_port=args.prefect_port,
            mlflow_port=args.mlflow_port,
            configs=args.config,
            timezone=args.timezone,
            serve=not args.no_serve,
            workers=args.workers,
            credentials=read_credentials(),
            database=database_of(args),
            postgres=args.postgres,
            postgres_port=args.postgres_port,
        )
        first = "PostgreSQL, " if args.postgres else ""
        workers = f" and {args.workers} worker{'s' if args.workers > 1 else ''}" if args.workers else ""
        print(
            f"starting {first}Prefect server, MLflow server{' and the deployments' if stack.serve else ''}{workers} ...",
            flush=True,
        )
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
    sp = sub.add_parser(
        "up",
        help="start the Prefect UI, the MLflow UI and the served deployments; Ctrl-C stops all",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="YAML",
        help="YAML config whose values are the deployments' default parameters (the Prefect UI's form); "
        "the project's configs/quickstart.yaml when omitted. Repeat it to serve several models in one stack: "
        "each config's deployments, nightly schedule and retrain automation are then named after its "
        "registry.model_name (fine-tune/manual-<model>, retrain/on-drift-<model>, ...) and act on that model only",
    )
    sp.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="register the deployments to the Prefect process work pool 'ftflow-process' (made when missing) and "
        "start N Prefect workers that run their flow runs, one at a time each, in the project's root (logs "
        "worker-<i>.log beside the servers'), each with its share of the cores (OMP_NUM_THREADS = cores // N unless "
        "set); a training run with search.parallel runs its other optimizers on them; 0: the serving process runs them",
    )
    sp.add_argument("--timezone", default="UTC", help="IANA time zone of the nightly 02:00 run, e.g. Europe/Berlin")
    sp.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface the servers listen on; any but loopback needs credentials "
        "(PREFECT_API_AUTH_STRING=user:password, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), "
        "which both servers then require",
    )
    sp.add_argument("--prefect-port", type=int, default=DEFAULT_PREFECT_PORT, help="Prefect port; 0 picks a free one")
    sp.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT, help="MLflow port; 0 picks a free one")
    sp.add_argument(
        "--home",
        default=DEFAULT_HOME,
        help="folder for the Prefect database and the logs (with --postgres: the PostgreSQL data, with a "
        "database: MLflow's artifacts)",
    )
    db = sp.add_mutually_exclusive_group()
    db.add_argument(
        "--database",
        default=None,
        metavar="URL",
        help=f"a PostgreSQL server for the three stores (databases prefect, mlflow, predictions, created when "
        f"missing), e.g. 'postgresql://ftflow:${{PGPASSWORD}}@db:5432': ${{NAME}} is read from the environment; "
        f"{DATABASE_URL_ENV} when omitted; MLflow then proxies the artifacts",
    )
    db.add_argument(
        "--postgres",
        action="store_true",
        help="start a local PostgreSQL (initdb in --home/postgres, loopback, a password generated at each start "
        "unless FTFLOW_POSTGRES_PASSWORD is set) for the three stores, stopped with the stack",
    )
    sp.add_argument("--postgres-port", type=int, default=0, help="the local PostgreSQL's port; 0 picks a free one")
    sp.add_argument("--no-serve", action="store_true", help="start only the two servers, not the deployments")
    sp.set_defaults(func=cmd_up)
