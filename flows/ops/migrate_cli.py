"""`ftflow migrate`: move a laptop's store into a team stack. Standard library only here, so `ftflow --help` stays fast."""

from __future__ import annotations

import argparse
import os

from flows.ops.command_env import prepare_command_env, print_refusal

DESCRIPTION = """\
Copy a laptop's store into a team stack: the MLflow experiments and runs (params, every metric's history
with its steps and times, tags, names, status, start and end times, artifacts), the registered models with
their versions (each pointing at its migrated run's artifacts), aliases and tags, and the prediction log
with its feedback and loss records.

Safe to run again: a second migrate copies nothing, and a migrate that failed part-way resumes where it
stopped without duplicates. Migrated runs carry the tag ftflow.migrated_from (the source run id),
migrated versions ftflow.migrated_from = NAME/VERSION. A URL may hold ${ENV} references
(postgresql+psycopg://ops:${PGPASSWORD}@db/mlflow); passwords are masked in every message."""

EPILOG = """\
Examples:
  ftflow migrate --to http://mlflow.team:5000 --to-log 'postgresql+psycopg://ops:${PGPASSWORD}@db/predictions'
  ftflow migrate --from sqlite:///$HOME/ft/mlruns/mlflow.db \
    --to 'postgresql+psycopg://ops:${PGPASSWORD}@db/mlflow' --to-artifacts file:///srv/mlflow-artifacts

With a tracking server, give it the login in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD; its artifact
proxying (--serve-artifacts, as `ftflow up` runs it) receives the files. A database URL as --to writes the backend
store directly: give --to-artifacts the artifact destination the team's server serves, so the copied files are
where its clients will read them."""


def cmd_migrate(args) -> int:
    prepare_command_env()
    # not needed by ftflow --help (tasks.migrate, tasks.platform.tracking): loaded when the command runs, so --help stays fast
    from tasks.migrate import KINDS, migrate_store
    from tasks.platform.tracking import store_dir

    # Not tracking_uri(): that makes an empty mlruns/ where there is none.
    source = args.source or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir() / 'mlflow.db'}"
    try:
        report = migrate_store(source, args.to, args.from_log, args.to_log, args.to_artifacts)
    except ValueError as e:  # ours, and SecretReferenceError: credentials already masked
        return print_refusal(e)
    print("\n=== migrated ===")
    print(f"{'':<12} {'copied':>8} {'skipped':>8}")
    for kind in KINDS:
        print(f"{kind:<12} {report.copied[kind]:>8} {report.skipped[kind]:>8}")
    for note in report.notes:
        print(f"note: {note}")
    print("(skipped: already at the destination from an earlier migrate)")
    return 0


def add_migrate_command(sub) -> None:
    """Register `ftflow migrate` on the CLI's sub-parsers."""
    sp = sub.add_parser(
        "migrate",
        help="copy a laptop's MLflow runs, registered models and prediction log into a team stack",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="URI",
        help="the source MLflow tracking URI (default: MLFLOW_TRACKING_URI, else this folder's "
        "sqlite:///mlruns/mlflow.db, whose artifacts sit beside it)",
    )
    sp.add_argument(
        "--to",
        required=True,
        metavar="URI",
        help="the destination: a tracking server URL (http://host:5000) or a backend-store database URL "
        "(postgresql+psycopg://user:${PASSWORD}@host/mlflow, sqlite:///path/mlflow.db)",
    )
    sp.add_argument(
        "--from-log",
        default=None,
        metavar="PATH|URL",
        help="the source prediction log: a folder (holding predictions/, feedback/, log_losses/) or a "
        "SQLAlchemy URL (default: the folder beside a SQLite --from store, when it holds a log)",
    )
    sp.add_argument(
        "--to-log",
        default=None,
        metavar="PATH|URL",
        help="the destination prediction log, e.g. postgresql+psycopg://user:${PASSWORD}@host/predictions "
        "(the stack's FTFLOW_PREDICTION_LOG); without it the log is not copied",
    )
    sp.add_argument(
        "--to-artifacts",
        default=None,
        metavar="URI",
        help="artifact root of the experiments migrate creates (file:///srv/mlartifacts, s3://bucket/mlflow); "
        "default: beside a SQLite --to store, else the server's own (its proxied artifact store)",
    )
    sp.set_defaults(func=cmd_migrate)
