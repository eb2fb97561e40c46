"""The one-promotion-per-model lock: a registered model `promotion-lock of NAME` that exists while one runs.

Creating a registered model is the one atomic step every MLflow store offers (local SQLite or a
tracking server): two processes on two machines creating the same name get one winner. The lock's
name holds spaces, which no model name may (tasks/config/base.py check_name), so no model can be
mistaken for a lock, nor a lock for a model.

A lock carries its holder's random `token`. Removing a lock (a release, or breaking one whose holder
died) is a compare-and-delete on that token, built from the same atomic step: whoever creates the
registered model `promotion-lock of NAME, released TOKEN` first is the only one allowed to delete
the lock holding TOKEN. Two promoters breaking the same dead lock: one deletes it, the other's
create fails and it never touches the lock the first then takes; a holder whose lock was broken
finds the marker taken at release and leaves the new holder's lock alone. Markers are kept an hour
(a reader that saw TOKEN must not re-create one after it is gone), then removed at a later release.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator

from tasks.platform import tracking
from tasks.platform.tracking import filter_value
from tasks.registry.decision import now_iso

LOCK_PREFIX = "promotion-lock of "  # spaces: no name check_name accepts can start so
RELEASED = ", released "
MARKER_KEEP_S = 3600

log = logging.getLogger(__name__)


class PromotionBusy(ValueError):
    """Another promotion or rollback of the same model is in progress."""


def lock_name(name: str) -> str:
    """The registered model that exists while a promotion or rollback of `name` runs."""
    return f"{LOCK_PREFIX}{name}"


def released_name(name: str, token: str) -> str:
    """The marker whose creator alone may delete `name`'s lock holding `token`."""
    return f"{lock_name(name)}{RELEASED}{token}"


def lock_holder(action: str) -> dict:
    """Who takes the promotion lock: shown to a refused second promotion, used to clear a dead holder's lock."""
    return {
        "action": action,
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "since": now_iso(),
        "token": uuid.uuid4().hex,
    }


def holder_token(tags: dict) -> str:
    """The lock's token; a lock from before tokens is named by its holder (pid, host, since)."""
    return tags.get("token") or f"pid-{tags.get('pid', '?')}-{tags.get('host', '?')}-{tags.get('since', '?')}"


def holder_is_dead(tags: dict) -> bool:
    """True when the lock's holder was a process on this machine that no longer exists."""
    if tags.get("host") != socket.gethostname() or not str(tags.get("pid", "")).isdigit():
        return False
    try:
        os.kill(int(tags["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _exists_error(e: Exception) -> bool:
    """Whether creating a registered model failed because one of that name exists."""
    if getattr(e, "error_code", None) == "RESOURCE_ALREADY_EXISTS":
        return True
    # Two writers racing on one name: MLflow's SQL store checks, then inserts, and the loser's insert fails on
    # the unique constraint as a raw SQLAlchemy IntegrityError, not as RESOURCE_ALREADY_EXISTS.
    text = str(e)
    return (
        type(e).__name__ == "IntegrityError"
        and "registered_models" in text
        and ("UNIQUE constraint failed" in text or "duplicate key value" in text)
    )


def _vanished_error(e: Exception) -> bool:
    """Whether creating a registered model lost a race to one that was deleted again before the store read it.

    MLflow's SQL store answers a unique-constraint failure by reading the existing model back; when its holder
    released it in between, that read raises RESOURCE_DOES_NOT_EXIST from inside the create.
    """
    return getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def remove_lock(name: str, token: str) -> bool:
    """Delete `name`'s lock if it still holds `token`, as one compare-and-delete; False when someone else
    removed that lock first (then nothing is deleted: the lock there now, if any, is another holder's)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.lock stays light
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    try:
        c.create_registered_model(released_name(name, token), tags={"released_at": now_iso()})
    except Exception as e:  # MlflowException, or the store's IntegrityError when two creates race
        if _exists_error(e) or _vanished_error(e):  # another remover made the marker first
            return False
        raise
    # Only the marker's creator deletes the lock holding `token`, so the lock still holds it or is gone;
    # read it anyway, so that a lock changed by hand is never deleted.
    try:
        held = dict(c.get_registered_model(lock_name(name)).tags)
    except MlflowException:
        return True
    if holder_token(held) != token:
        return False
    with contextlib.suppress(MlflowException):
        c.delete_registered_model(lock_name(name))
    return True


def forget_old_markers(name: str) -> None:
    """Delete `name`'s release markers older than MARKER_KEEP_S (long after anyone could still act on them)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.lock stays light
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    cutoff_ms = (time.time() - MARKER_KEEP_S) * 1000
    pattern = filter_value(f"{released_name(name, '')}%")
    with contextlib.suppress(MlflowException):
        for model in c.search_registered_models(f"name LIKE {pattern}", max_results=100):
            if (model.creation_timestamp or 0) < cutoff_ms:
                with contextlib.suppress(MlflowException):
                    c.delete_registered_model(model.name)


@contextlib.contextmanager
def promotion_lock(name: str, action: str, break_lock: bool = False) -> Iterator[None]:
    """Hold the one-promotion-per-model lock while the block runs; refuse at once if another holds it.

    A lock left by a killed process on this machine is cleared; elsewhere `break_lock`
    (`ftflow promote NAME --break-lock`) clears it. Either way by remove_lock's compare-and-delete:
    of several promoters breaking the same dead lock, exactly one enters.
    """
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.lock stays light
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    lock = lock_name(name)
    mine = lock_holder(action)
    held: dict = {}
    for _ in range(5):  # a lock released in between, one broken by us, one read half-made: try again
        try:
            c.create_registered_model(
                lock, tags=mine, description=f"held while a promotion or rollback of '{name}' runs"
            )
            break
        except Exception as e:  # MlflowException, or the store's IntegrityError when two creates race
            if _vanished_error(e):
                continue  # the winner's lock was released before the store could read it back: try again
            if not _exists_error(e):
                raise
        try:
            held = dict(c.get_registered_model(lock).tags)
        except MlflowException:
            continue  # released in between
        if not held:  # read between a tracking server's create and its tags: look again
            time.sleep(0.2)
            continue
        if break_lock or holder_is_dead(held):
            remove_lock(name, holder_token(held))  # False: another promoter removed it first; either way, again
            continue
        raise PromotionBusy(
            f"model '{name}': another promotion or rollback is in progress ({held.get('action', '?')}, pid "
            f"{held.get('pid', '?')} on {held.get('host', '?')} since {held.get('since', '?')}); nothing was "
            f"changed. Run again when it has finished; if that process is gone, clear its lock with "
            f"`ftflow promote {name} --break-lock`"
        )
    else:
        raise PromotionBusy(
            f"model '{name}': the promotion lock changed hands five times while taking it; nothing was "
            f"changed. Run again in a moment"
        )
    try:
        yield
    finally:
        if not remove_lock(name, mine["token"]):
            log.warning(
                "model '%s': this promotion's lock was broken by another process while it ran (--break-lock?); "
                "its lock was left alone",
                name,
            )
        forget_old_markers(name)
