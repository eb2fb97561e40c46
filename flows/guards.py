"""What nightly and retrain pass before they train: one training per model at a time, and the retrain cooldown.

Both live on the Prefect server, so they hold across flow runs, serving processes and machines that share it:

- The training slot is a Prefect global concurrency limit of 1 per registered model (`ftflow-train-<model>`,
  made here when missing, listed under Concurrency in the UI). Its lease is renewed while the holder runs and
  lapses about LEASE_S after a holder dies, so a crashed training never locks its model for good. A second
  training waits for the slot up to `registry.training_wait_minutes`, then `TrainingBusy` says why; the flows
  end Cancelled with that message. Nested takes in one process (retrain runs nightly as a subflow) pass.
- The cooldown: a retrain that is allowed to train tags its flow run `retrain-of:<model>`; the next retrain of
  that model within `monitoring.retrain_cooldown_hours` of such a run's start is refused, naming when it may
  run, unless it is forced. It is checked while the slot is held, so two retrains asked for together cannot
  both pass it. A retrain that failed counts too: a failing retrain is not retried on every alarm.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterStartTime, FlowRunFilterTags
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import MissingContextError, ObjectAlreadyExists
from prefect.runtime import flow_run

SLOT_PREFIX = "ftflow-train-"
RETRAIN_TAG_PREFIX = "retrain-of:"
LEASE_S = 300.0  # how long a dead holder keeps the slot; renewed well before it ends while the holder lives

# The slots this process holds, so a subflow of the holder (retrain → nightly) does not wait for itself.
_held: ContextVar[frozenset[str]] = ContextVar("ftflow_training_slots", default=frozenset())


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (its lines show on the run in the UI); this module's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class TrainingBusy(Exception):
    """Another training of the model held its slot longer than this run would wait."""


def slot_name(model_name: str) -> str:
    """The global concurrency limit of a model's trainings (model names have no '/', '%', '&', '<', '>')."""
    return f"{SLOT_PREFIX}{model_name}"


def retrain_tag(model_name: str) -> str:
    """The tag of a flow run that retrained `model_name`: the next retrain's cooldown counts from its start."""
    return f"{RETRAIN_TAG_PREFIX}{model_name}"


def ensure_slot(model_name: str) -> int:
    """Make the model's slot a live limit of 1 (an operator's change undone); returns the slots in use now."""
    name = slot_name(model_name)
    with get_client(sync_client=True) as client:
        with suppress(ObjectAlreadyExists):  # made by an earlier run, or by another one at this moment
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        limit = client.read_global_concurrency_limit_by_name(name)
        if limit.limit != 1 or not limit.active:
            # A wider or inactive limit would let two trainings of one model run together.
            _logger().warning(
                "concurrency limit %s was %s with %d slots; set back to active with 1",
                name,
                "active" if limit.active else "inactive",
                limit.limit,
            )
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))
        return limit.active_slots


@contextmanager
def training_slot(model_name: str, wait_minutes: float) -> Iterator[None]:
    """Hold `model_name`'s training slot for the block; `TrainingBusy` when not free within `wait_minutes`."""
    # heavy (prefect.concurrency.sync): loaded when this runs, so importing flows.guards stays light
    from prefect.concurrency.sync import concurrency

    name = slot_name(model_name)
    if name in _held.get():
        yield
        return
    logger = _logger()
    if ensure_slot(model_name):
        logger.info("another training of %s holds %s; waiting up to %g minutes", model_name, name, wait_minutes)
    run_id = flow_run.get_id()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(run_id)) if run_id else None
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=max(wait_minutes * 60.0, 1.0),  # 0 still asks once
                    lease_duration=LEASE_S,
                    strict=True,  # a missing limit is an error here, never a silent pass
                    holder=holder,  # the UI shows which flow run holds the slot
                    # A renewal that fails once must not kill hours of training; the lease outlives a short outage.
                    raise_on_lease_renewal_failure=False,
                )
            )
        except TimeoutError:
            raise TrainingBusy(
                f"another training of {model_name} (a nightly or a retrain) held the slot {name} for "
                f"{wait_minutes:g} minutes (registry.training_wait_minutes); this run trained nothing. "
                f"Run it again when that one has ended (the Prefect UI lists the slot under Concurrency)"
            ) from None
        token = _held.set(_held.get() | {name})
        try:
            logger.info("holding %s: no other nightly or retrain of %s trains until this run ends", name, model_name)
            yield
        finally:
            _held.reset(token)


def cooldown_refusal(model_name: str, hours: float, now: dt.datetime | None = None) -> str | None:
    """Why a retrain of `model_name` may not run now (another began less than `hours` ago), or None."""
    if hours <= 0:
        return None
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=hours)
    run_id = flow_run.get_id()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[retrain_tag(model_name)]),
                start_time=FlowRunFilterStartTime(after_=since),
                id=FlowRunFilterId(not_any_=[UUID(run_id)]) if run_id else None,
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    last = runs[0] if runs else None
    if last is None or last.start_time is None:
        return None
    began = last.start_time.astimezone(dt.UTC)
    may_run = began + dt.timedelta(hours=hours)
    return (
        f"retrain of {model_name} refused: the last retrain (flow run '{last.name}', {last.id}) began "
        f"{began:%Y-%m-%d %H:%M:%S} UTC, less than monitoring.retrain_cooldown_hours={hours:g} ago; "
        f"it may run after {may_run:%Y-%m-%d %H:%M:%S} UTC, or now with force=true"
    )


def mark_retrain(model_name: str) -> None:
    """Tag this flow run as a retrain of `model_name`: the next retrain's cooldown counts from its start."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
        client.update_flow_run(UUID(run_id), tags=sorted({*run.tags, retrain_tag(model_name)}))
