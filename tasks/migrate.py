"""Moving in: copy a laptop's store (MLflow runs, registry, prediction log) into a team stack.

`migrate_store` reads a source MLflow store and prediction log and writes them to a destination through
the MLflow client API on both sides (so the destination may be a tracking server with artifact proxying, a
PostgreSQL backend store or another SQLite file) and the prediction log's own sinks.

Idempotent and resumable, without duplicates:
- every migrated run carries the tag `ftflow.migrated_from` (the source run id) from its creation, and
  `ftflow.migration` = `complete` once its params, metric histories, artifacts and status are copied; a later
  migrate skips complete runs, and deletes and copies again a run a failed migrate left incomplete;
- every migrated model version carries `ftflow.migrated_from` = `NAME/VERSION`; aliases and tags are set
  only where they differ;
- prediction-log rows already at the destination (the same values in every column) are not written again.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.platform.tracking import create_sqlite_store, filter_value
from tasks.secrets import expand_references, redact_text, redact_url

if TYPE_CHECKING:
    import pyarrow as pa

FROM_TAG = "ftflow.migrated_from"
STATE_TAG, COMPLETE = "ftflow.migration", "complete"
PARENT_TAG, RUN_NAME_TAG = "mlflow.parentRunId", "mlflow.runName"
KINDS = ("experiments", "runs", "metrics", "artifacts", "models", "versions", "aliases", "log rows")
PAGE = 1000
logger = logging.getLogger("ftflow.migrate")


class MigrationError(ValueError):
    """A store could not be read or written; the message names it with its credentials masked."""


@dataclass
class MigrationReport:
    """What was copied and what was already there (skipped), per kind (KINDS); notes on what was left as is."""

    copied: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, copied: int = 0, skipped: int = 0) -> None:
        self.copied[kind] += copied
        self.skipped[kind] += skipped


@dataclass(frozen=True)
class _RunMap:
    source_artifact_uri: str
    run_id: str
    artifact_uri: str


# (stage, what): a test's hook to fail a migrate part-way: ("created" | "complete", source run id), ("version", NAME/N)
Checkpoint = Callable[[str, str], None]


def _pages(search: Callable, **kwargs) -> Iterator:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = search(**kwargs, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _client(uri: str):
    # heavy (mlflow): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        create_sqlite_store(uri)  # a new file gets its schema (and its artifacts folder beside it) first
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _artifact_root(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file; the server's choice otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return None


def default_log_location(tracking_uri: str) -> str | None:
    """The prediction log a local store keeps beside it (the folder holding mlflow.db), when it has one."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    folder = Path(tracking_uri[len("sqlite:///") :]).parent
    return str(folder) if (folder / "predictions").is_dir() else None


def copy_experiments(src, dst, artifact_root: str | None, report: MigrationReport) -> dict[str, str]:
    """Create each source experiment (by name, with its tags) at the destination; {source id: destination id}.

    artifact_root: where a created experiment keeps its artifacts (None: the destination's default)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.entities import ViewType

    ids = {}
    for exp in _pages(src.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=PAGE):
        have = dst.get_experiment_by_name(exp.name)
        if have is not None and have.lifecycle_stage == "deleted":
            raise MigrationError(
                f"experiment '{exp.name}' is deleted at the destination: restore it (mlflow experiments restore "
                f"--experiment-id {have.experiment_id}) or purge it (mlflow gc), then migrate again"
            )
        tags = {k: v for k, v in (exp.tags or {}).items() if not k.startswith("mlflow.")}
        if have is None:
            ids[exp.experiment_id] = dst.create_experiment(exp.name, artifact_location=artifact_root, tags=tags)
            report.add("experiments", copied=1)
        else:
            ids[exp.experiment_id] = have.experiment_id
            for k, v in tags.items():
                if have.tags.get(k) != v:
                    dst.set_experiment_tag(have.experiment_id, k, v)
            report.add("experiments", skipped=1)
    return ids


def _depth(run, by_id: dict) -> int:
    """How deep `run` is nested (parents are copied before their children, so the child can point at them)."""
    depth, seen = 0, set()
    parent = run.data.tags.get(PARENT_TAG)
    while parent in by_id and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = by_id[parent].data.tags.get(PARENT_TAG)
    return depth


def copy_runs(
    src, dst, experiments: dict[str, str], report: MigrationReport, checkpoint: Checkpoint | None = None
) -> dict[str, _RunMap]:
    """Copy every active run of the mapped experiments; {source run id: where it lives at the destination}."""
    # heavy (mlflow): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.entities import ViewType

    mapped: dict[str, _RunMap] = {}
    for src_exp, dst_exp in experiments.items():
        runs = list(
            _pages(src.search_runs, experiment_ids=[src_exp], run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE)
        )
        by_id = {r.info.run_id: r for r in runs}
        there: dict[str, list] = {}
        for r in _pages(
            dst.search_runs, experiment_ids=[dst_exp], run_view_type=ViewType.ACTIVE_ONLY, max_results=PAGE
        ):
            origin = r.data.tags.get(FROM_TAG)
            if origin:
                there.setdefault(origin, []).append(r)
        for run in sorted(runs, key=lambda r: (_depth(r, by_id), r.info.start_time or 0)):
            source_id = run.info.run_id
            done = [r for r in there.get(source_id, []) if r.data.tags.get(STATE_TAG) == COMPLETE]
            for partial in [r for r in there.get(source_id, []) if r not in done]:
                # Left incomplete by a failed migrate: deleted (MLflow's trash; `mlflow gc` purges it), copied again.
                logger.info("run %s: deleting the incomplete copy %s", source_id, partial.info.run_id)
                dst.delete_run(partial.info.run_id)
            if done:
                mapped[source_id] = _RunMap(run.info.artifact_uri, done[0].info.run_id, done[0].info.artifact_uri)
                report.add("runs", skipped=1)
                report.add("metrics", skipped=sum(len(src.get_metric_history(source_id, k)) for k in run.data.metrics))
                report.add("artifacts", skipped=_artifact_count(src, source_id))
                continue
            mapped[source_id] = copy_run(src, dst, run, dst_exp, mapped, report, checkpoint)
            report.add("runs", copied=1)
    return mapped


def _artifact_count(client, run_id: str, path: str | None = None) -> int:
    """How many files a run's artifacts hold."""
    return sum(_artifact_count(client, run_id, f.path) if f.is_dir else 1 for f in client.list_artifacts(run_id, path))


def copy_run(
    src,
    dst,
    run,
    dst_exp: str,
    mapped: dict[str, _RunMap],
    report: MigrationReport,
    checkpoint: Checkpoint | None,
) -> _RunMap:
    """One run: tags (its parent remapped), params, every metric's full history, artifacts, status and times."""
    # heavy (mlflow): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.entities import Metric, Param, RunStatus

    source_id = run.info.run_id
    tags = {k: v for k, v in run.data.tags.items() if k not in (PARENT_TAG, RUN_NAME_TAG)}
    parent = run.data.tags.get(PARENT_TAG)
    if parent:
        tags[PARENT_TAG] = mapped[parent].run_id if parent in mapped else parent
    new = dst.create_run(
        dst_exp, start_time=run.info.start_time, tags={**tags, FROM_TAG: source_id}, run_name=run.info.run_name
    )
    run_id = new.info.run_id
    if checkpoint:
        checkpoint("created", source_id)
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(run_id, params=params[i : i + 100])
    history = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in src.get_metric_history(source_id, key)
    ]
    for i in range(0, len(history), PAGE):
        dst.log_batch(run_id, metrics=history[i : i + PAGE])
    report.add("metrics", copied=len(history))
    with tempfile.TemporaryDirectory(prefix="ftflow-migrate-") as tmp:
        if src.list_artifacts(source_id):
            local = Path(src.download_artifacts(source_id, "", tmp))
            files = [p for p in local.rglob("*") if p.is_file()]
            dst.log_artifacts(run_id, str(local))
            report.add("artifacts", copied=len(files))
    status = run.info.status
    if status != RunStatus.to_string(RunStatus.RUNNING):
        dst.set_terminated(run_id, status=status, end_time=run.info.end_time)
    dst.set_tag(run_id, STATE_TAG, COMPLETE)
    if checkpoint:
        checkpoint("complete", source_id)
    return _RunMap(run.info.artifact_uri, run_id, dst.get_run(run_id).info.artifact_uri)


def _version_source(version, runs: dict[str, _RunMap]) -> tuple[str, str | None]:
    """(source, run id) of a version at the destination: its files in the migrated run's artifacts."""
    moved = runs.get(version.run_id or "")
    source = version.source
    if moved is None:
        return source, None
    if source.startswith(moved.source_artifact_uri):
        return moved.artifact_uri + source[len(moved.source_artifact_uri) :], moved.run_id
    prefix = f"runs:/{version.run_id}/"
    if source.startswith(prefix):
        return f"runs:/{moved.run_id}/" + source[len(prefix) :], moved.run_id
    return source, moved.run_id


def copy_registry(
    src, dst, runs: dict[str, _RunMap], report: MigrationReport, checkpoint: Checkpoint | None = None
) -> None:
    """Registered models (description, tags), their versions in order (source repointed, tags), and aliases."""
    # heavy (mlflow): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.exceptions import MlflowException

    for model in _pages(src.search_registered_models, max_results=PAGE):
        name = model.name
        try:
            have = dst.get_registered_model(name)
            report.add("models", skipped=1)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            have = dst.create_registered_model(name, tags=model.tags or {}, description=model.description)
            report.add("models", copied=1)
        for k, v in (model.tags or {}).items():
            if (have.tags or {}).get(k) != v:
                dst.set_registered_model_tag(name, k, v)
        query = f"name = {filter_value(name)}"
        there = {
            v.tags.get(FROM_TAG): v for v in _pages(dst.search_model_versions, filter_string=query, max_results=PAGE)
        }
        numbers: dict[str, str] = {}
        for version in sorted(
            _pages(src.search_model_versions, filter_string=query, max_results=PAGE), key=lambda v: int(v.version)
        ):
            key = f"{name}/{version.version}"
            if key in there:
                numbers[str(version.version)] = str(there[key].version)
                report.add("versions", skipped=1)
                continue
            if version.source.startswith("models:/"):  # an MLflow 3 logged model: kept outside any run's files
                report.notes.append(f"{key}: not copied, its source {version.source} is a logged model")
                continue
            source, run_id = _version_source(version, runs)
            if run_id is None:
                report.notes.append(f"{key}: its run was not migrated; the version points at {redact_url(source)}")
            made = dst.create_model_version(
                name,
                source=source,
                run_id=run_id,
                tags={**(version.tags or {}), FROM_TAG: key},
                description=version.description,
            )
            numbers[str(version.version)] = str(made.version)
            report.add("versions", copied=1)
            if checkpoint:
                checkpoint("version", key)
        aliases = dict(dst.get_registered_model(name).aliases or {})
        for alias, number in (model.aliases or {}).items():
            target = numbers.get(str(number))
            if target is None:
                continue
            if str(aliases.get(alias)) == target:
                report.add("aliases", skipped=1)
            else:
                dst.set_registered_model_alias(name, alias, target)
                report.add("aliases", copied=1)


def log_tables() -> list[tuple[str, pa.Schema]]:
    """The prediction log's tables: the predictions, the feedback and the loss records beside them."""
    # heavy (pandas, pyarrow via tasks.monitoring.feedback): loaded when this runs, so importing tasks.migrate stays light
    from tasks.monitoring.feedback import FEEDBACK, FEEDBACK_SCHEMA
    from tasks.monitoring.prediction_log import LOSS_SCHEMA, LOSSES, PREDICTION_SCHEMA, PREDICTIONS

    return [(PREDICTIONS, PREDICTION_SCHEMA), (FEEDBACK, FEEDBACK_SCHEMA), (LOSSES, LOSS_SCHEMA)]


def _row_keys(df, columns: list[str]) -> list[tuple]:
    """Each row as a tuple of comparable values (times in UTC to the microsecond, missing values as None)."""
    # heavy (pandas): loaded when this runs, so importing tasks.migrate stays light
    import pandas as pd

    def utc(v) -> str:
        t = pd.Timestamp(v)
        return (t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")).isoformat()

    out = df.reindex(columns=columns).astype(object)
    for c in columns:
        kind = utc if c in ("time", "first_time") else (lambda v: v)
        out[c] = [None if v is None or (not isinstance(v, str) and pd.isna(v)) else kind(v) for v in out[c]]
    return list(out.itertuples(index=False, name=None))


def _log_table_exists(location: str, table: str) -> bool:
    # heavy (pandas, pyarrow via tasks.monitoring.prediction_log): loaded when this runs, so importing tasks.migrate stays light
    from tasks.monitoring.prediction_log import is_database_url

    if not is_database_url(location):
        return (Path(location) / table).is_dir()
    # heavy (sqlalchemy): loaded when this runs, so importing tasks.migrate stays light
    import sqlalchemy as sa

    engine = sa.create_engine(location)
    try:
        return sa.inspect(engine).has_table(table)
    finally:
        engine.dispose()


def copy_log(source: str, destination: str, report: MigrationReport) -> None:
    """Copy each log table's rows the destination lacks (a table written as one batch per run of migrate)."""
    # heavy (pandas, pyarrow via tasks.monitoring.prediction_log): loaded when this runs, so importing tasks.migrate stays light
    from tasks.monitoring.prediction_log import open_sink

    for table, schema in log_tables():
        if not _log_table_exists(source, table):  # not opened: opening a database table creates it
            continue
        rows = open_sink(table, schema, source).read()
        if rows.empty:
            continue
        columns = list(schema.names)
        there = set(_row_keys(open_sink(table, schema, destination).read(), columns))
        keys = _row_keys(rows, columns)
        new = rows[[k not in there for k in keys]]
        if len(new):
            clean = new.reindex(columns=columns).astype(object).where(new.reindex(columns=columns).notna(), None)
            open_sink(table, schema, destination).write(clean.to_dict("records"))
        report.add("log rows", copied=len(new), skipped=len(rows) - len(new))


def migrate_store(
    source_tracking: str,
    destination_tracking: str,
    source_log: str | None = None,
    destination_log: str | None = None,
    destination_artifacts: str | None = None,
    checkpoint: Checkpoint | None = None,
) -> MigrationReport:
    """Copy the source store into the destination (see the module's docstring); URLs may hold `${ENV}` references.

    source_log: the source's prediction log (a folder or SQLAlchemy URL; default: the folder beside a SQLite
    store when it holds a log). destination_log: where its rows go; without it the log is not copied.
    destination_artifacts: the artifact root of the experiments created at the destination (default: a folder
    `artifacts` beside a SQLite store; a tracking server's own choice, its proxied artifact store, otherwise).
    """
    # heavy (mlflow, sqlalchemy): loaded when this runs, so importing tasks.migrate stays light
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    secrets: tuple[str, ...] = ()

    def expand(value: str | None, what: str) -> str | None:
        nonlocal secrets
        if value is None:
            return None
        expanded, used = expand_references(value, what)
        secrets += used
        return expanded

    src_uri = expand(source_tracking, "the source tracking URI") or ""
    dst_uri = expand(destination_tracking, "the destination tracking URI") or ""
    src_log = expand(source_log, "the source prediction log") or default_log_location(src_uri)
    dst_log = expand(destination_log, "the destination prediction log")
    if destination_artifacts is None and not dst_uri.startswith(("http://", "https://", "sqlite:///", "databricks")):
        raise MigrationError(
            f"the destination {redact_url(destination_tracking)} is a database: say where the copied artifacts go "
            "with --to-artifacts (the artifact destination its tracking server serves), or migrate through the "
            "tracking server's URL (http://host:port), which stores them itself"
        )
    if src_uri.startswith("sqlite:///") and not Path(src_uri[len("sqlite:///") :]).is_file():
        raise MigrationError(
            f"no MLflow store at {redact_url(source_tracking)}: give --from the laptop's store, e.g. "
            "sqlite:///path/to/mlruns/mlflow.db (its artifacts folder beside it)"
        )
    if src_uri == dst_uri:
        raise MigrationError(f"the source and destination are the same store ({redact_url(src_uri)})")
    report = MigrationReport()
    try:
        src, dst = _client(src_uri), _client(dst_uri)
        root = expand(destination_artifacts, "the destination artifact root") or _artifact_root(dst_uri)
        experiments = copy_experiments(src, dst, root, report)
        runs = copy_runs(src, dst, experiments, report, checkpoint)
        copy_registry(src, dst, runs, report, checkpoint)
        if src_log and dst_log:
            copy_log(src_log, dst_log, report)
        elif src_log:
            report.notes.append(f"prediction log at {redact_url(src_log)} not copied: no destination log given")
    except (MlflowException, OSError, SQLAlchemyError) as e:
        text = redact_text(str(e).splitlines()[0] if str(e) else type(e).__name__, secrets)
        raise MigrationError(
            f"migrating {redact_url(source_tracking)} to {redact_url(destination_tracking)} failed: {text}; what "
            "was copied is kept, and running the same migrate again resumes where it stopped"
        ) from None
    return report
