"""Every MLflow tracking call lives here, addressed by run id.

Runs are created and written through `MlflowClient` with explicit run ids, never
the thread-local "active run": tasks may run in worker threads or processes and
must all log into the one run their flow opened.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote

from tasks.secrets import redact_text, redact_url, url_password

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_STORE_DIR = "mlruns"
_READY_STORES: set[str] = set()  # SQLite stores this process has seen created


def store_dir() -> Path:
    """The embedded MLflow store folder (`mlruns/` of the working directory unless FTFLOW_MLRUNS says)."""
    return Path(os.environ.get("FTFLOW_MLRUNS", DEFAULT_STORE_DIR)).resolve()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store under `mlruns/`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = store_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def shown_tracking_uri() -> str:
    """The tracking URI as it may be printed or stored: a password in it masked."""
    return redact_url(tracking_uri())


def redact_tracking(text: str) -> str:
    """`text` (an MLflow error, say) with the tracking server's credentials masked: every URL's password,
    and the URI's password and MLFLOW_TRACKING_PASSWORD / _TOKEN wherever they appear, encoded or not."""
    password = url_password(os.environ.get("MLFLOW_TRACKING_URI") or "")
    values = [password, unquote(password or "")] + [
        os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("PASSWORD", "TOKEN")
    ]
    return redact_text(text, tuple(v for v in values if v))


class TrackingError(ValueError):
    """The MLflow tracking store or registry failed; the message names it masked and says what to check."""


@contextmanager
def masked_errors():
    """Re-raise an MLflow failure with the tracking URI's credentials masked.

    MLflow's own messages hold the request URL, password included ("Invalid url: http://ops:pw@host/api/...");
    a flow's state message, its logged traceback and the CLI's error line are all built from the exception.
    """
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise TrackingError(
            f"the MLflow tracking store at {shown_tracking_uri()} failed: {redact_tracking(str(e))}; check "
            "MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_USERNAME / _PASSWORD) and that the server is reachable"
        ) from None


def masks_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` with its MLflow failures re-raised masked (masked_errors): for the stages (Prefect tasks), whose
    exception becomes the task's state message and the run log's traceback.

    Not for flows: Prefect validates a flow's parameters against the function's module globals, which a
    wrapper defined here would replace; a flow's body opens `with masked_errors():` instead.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with masked_errors():
            return fn(*args, **kwargs)

    return wrapper


def configure() -> str:
    """Point MLflow at the configured store (created first when it is a new SQLite file); return the URI."""
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///") and uri not in _READY_STORES:
        create_sqlite_store(uri)
        _READY_STORES.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def create_sqlite_store(uri: str) -> None:
    """Create a SQLite store's schema once, under a file lock beside the database.

    MLflow creates the tables of a new SQLite store in whichever process opens it first, without
    a lock: two runs started together on a fresh checkout both try, and one fails with "table ...
    already exists". Here the second waits for the first and then finds the tables made.
    """
    # heavy (mlflow) and Unix-only (fcntl): only a new SQLite store needs them, so importing tracking stays light
    import fcntl

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        SqlAlchemyStore(uri, default_artifact_root=(db.parent / "artifacts").as_uri()).engine.dispose()


def client():
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.tracking import MlflowClient

    uri = configure()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(name: str) -> str:
    """Experiment id for `name`, created with artifacts under the store folder when local."""
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:") and "MLFLOW_TRACKING_URI" not in os.environ:
        location = (store_dir() / "artifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:  # another run created it a moment ago
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(experiment: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Open a run and return its id."""
    exp_id = ensure_experiment(experiment)
    run = client().create_run(exp_id, run_name=run_name, tags=tags or {})
    return run.info.run_id


def start_child_run(parent_run_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Open a run nested under `parent_run_id` (same experiment; the UI shows it under its parent)."""
    c = client()
    parent = c.get_run(parent_run_id)
    run = c.create_run(
        parent.info.experiment_id, run_name=run_name, tags={"mlflow.parentRunId": parent_run_id, **(tags or {})}
    )
    return run.info.run_id


def reopen_run(run_id: str) -> None:
    """Mark a finished or failed run as running again, so a resumed flow keeps logging into it."""
    client().update_run(run_id, status="RUNNING")


def end_run(run_id: str, status: str = "FINISHED") -> None:
    client().set_terminated(run_id, status=status)


@contextmanager
def ended_run(run_id: str | None):
    """End the run FINISHED, or FAILED on any error or interrupt (which still propagates); None: no run."""
    try:
        yield
    except BaseException:
        if run_id:
            end_run(run_id, "FAILED")
        raise
    if run_id:
        end_run(run_id, "FINISHED")


def log_params(run_id: str, params: dict[str, Any]) -> None:
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.entities import Param

    # Masked here as well as in the config dump: params are the first place a leaked URL is read.
    items = [Param(k, "None" if v is None else redact_text(str(v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client().log_batch(run_id, params=items[i : i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step or 0)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and math.isfinite(float(v))
    ]
    for i in range(0, len(items), 500):
        client().log_batch(run_id, metrics=items[i : i + 500])


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    c = client()
    for k, v in tags.items():
        c.set_tag(run_id, k, redact_text(str(v)))


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file, or a folder's contents, into the run."""
    path = Path(path)
    if path.is_dir():
        client().log_artifacts(run_id, str(path), artifact_path)
    elif path.exists():
        client().log_artifact(run_id, str(path), artifact_path)


def log_text(run_id: str, text: str, artifact_file: str) -> None:
    client().log_text(run_id, text, artifact_file)


def log_dataset_input(run_id: str, df, name: str, source: str, digest: str, context: str) -> None:
    """Record a split as an MLflow dataset input (lineage: source, digest, schema)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    # The schema needs a sample only; profiling a million rows here would cost for nothing.
    with warnings.catch_warnings():  # its hint about integer columns is for model signatures, not inputs
        warnings.simplefilter("ignore", UserWarning)
        # mlflow.data defines its from_* constructors at import time (its dataset registry): invisible to mypy.
        ds = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            df.head(1000), source=dataset_source(redact_text(source)), name=name, digest=digest
        )
        entity = ds._to_mlflow_entity()
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    for attempt in range(3):
        try:
            client().log_inputs(run_id, datasets=inputs)
            return
        except Exception as e:
            # MLflow looks the dataset up, then inserts it: two runs logging the same split at once
            # both insert, and the second hits the unique key. Again, it finds the row made.
            if attempt == 2 or not lost_an_insert_race(e):
                raise
            time.sleep(0.2 * (attempt + 1))


def lost_an_insert_race(error: Exception) -> bool:
    """True when the store refused a write because another process inserted the same row a moment before."""
    text = f"{error} {error.__cause__!r}"
    return any(s in text for s in ("IntegrityError", "UNIQUE constraint", "duplicate key"))


def dataset_source(source: str):
    """A source MLflow can file: a path or URL as itself; anything else (an SQL connection) by name in tags."""
    # heavy (mlflow): loaded when this runs, so importing tasks.platform.tracking stays light
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    try:
        return resolve_dataset_source(source)
    except MlflowException:  # MLflow resolves paths and URLs only
        return CodeDatasetSource(tags={"source": source})


def run_ui_url(run_id: str) -> str | None:
    """The run's page in the MLflow UI when tracking goes to a server; None for a local store."""
    uri = shown_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return None
    exp_id = client().get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"


def run_url_hint(run_id: str) -> str:
    """The command that opens the MLflow UI on this store, and where the run is."""
    uri = shown_tracking_uri()
    if uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000   # then open run {run_id}"
    return run_ui_url(run_id) or f"{uri.rstrip('/')}/#/runs/{run_id}"


def filter_value(value: str) -> str:
    """`value` quoted for an MLflow filter string, so a name cannot change the filter's meaning."""
    # MLflow's filter parser has no escape inside quotes: pick the quote the value lacks.
    value = str(value)
    if "\\" not in value:
        if "'" not in value:
            return f"'{value}'"
        if '"' not in value:
            return f'"{value}"'
    raise ValueError(
        f"{value!r} cannot be used in an MLflow search: it holds a backslash or both quote kinds; "
        f"names may hold only letters, digits, '.', '_' and '-'"
    )


def find_runs(
    experiment: str, filter_string: str = "", order_by: list[str] | None = None, max_results: int = 1000
) -> list:
    """Runs of an experiment matching an MLflow filter (e.g. "tags.model_name = 'x'"); [] when it does not exist."""
    c = client()
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(
        c.search_runs([exp.experiment_id], filter_string=filter_string, order_by=order_by, max_results=max_results)
    )


def run_params(run_id: str) -> dict[str, str]:
    return dict(client().get_run(run_id).data.params)


def download_run_artifact(run_id: str, artifact_path: str, dst: str | Path) -> Path:
    """Fetch one artifact (file or folder) of a run into `dst`; return its local path."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(client().download_artifacts(run_id, artifact_path, str(dst)))
