"""The one-promotion-per-model lock: a registered model `NAME.promotion-lock` that exists while one runs."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from tasks.platform import tracking
from tasks.registry.decision import now_iso

LOCK_SUFFIX = ".promotion-lock"  # registered model that exists while a promotion of NAME runs


class PromotionBusy(ValueError):
    """Another promotion or rollback of the same model is in progress."""


def lock_holder(action: str) -> dict:
    """Who takes the promotion lock: shown to a refused second promotion, used to clear a dead holder's lock."""
    return {"action": action, "pid": str(os.getpid()), "host": socket.gethostname(), "since": now_iso()}


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


@contextlib.contextmanager
def promotion_lock(name: str, action: str, break_lock: bool = False) -> Iterator[None]:
    """Hold the one-promotion-per-model lock while the block runs; refuse at once if another holds it.

    The lock is a registered model `NAME.promotion-lock`: creating a registered model is atomic in
    every MLflow store (local SQLite or a tracking server), so two processes on two machines get
    one winner. A lock left by a killed process on this machine is cleared; elsewhere `break_lock`
    (`ftflow promote NAME --break-lock`) clears it.
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    lock = f"{name}{LOCK_SUFFIX}"
    for attempt in (1, 2):
        try:
            c.create_registered_model(
                lock, tags=lock_holder(action), description=f"held while a promotion or rollback of '{name}' runs"
            )
            break
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            try:
                held = dict(c.get_registered_model(lock).tags)
            except MlflowException:
                held = {}  # released in between: try once more
            if attempt == 1 and (not held or break_lock or holder_is_dead(held)):
                with contextlib.suppress(MlflowException):
                    if held:
                        c.delete_registered_model(lock)
                continue
            raise PromotionBusy(
                f"model '{name}': another promotion or rollback is in progress ({held.get('action', '?')}, pid "
                f"{held.get('pid', '?')} on {held.get('host', '?')} since {held.get('since', '?')}); nothing was "
                f"changed. Run again when it has finished; if that process is gone, clear its lock with "
                f"`ftflow promote {name} --break-lock`"
            ) from None
    try:
        yield
    finally:
        c.delete_registered_model(lock)
