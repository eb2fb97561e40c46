"""The served model: loads the alias's version and keeps serving it while the alias moves.

A background thread polls the alias and, when it moves, loads the new version beside the old one
and swaps a single reference: a request reads that reference once, so it finishes on the model it
started with and never fails for a reload.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.settings import Settings
from tasks.platform import tracking

if TYPE_CHECKING:  # imported where a bundle is loaded: importing the app must not load ONNX Runtime
    from tasks.inference.predictor import OnnxPredictor

log = logging.getLogger("ftflow.serve")

MAX_RETRY_WAIT_S = 600  # longest wait before loading a failed version again


@dataclass(frozen=True)
class Served:
    """One loaded model version; replaced whole, never changed in place."""

    predictor: OnnxPredictor
    version: str
    run_id: str | None
    tags: dict
    folder: Path
    loaded_at: str


@dataclass
class ModelHolder:
    """Holds the served model and keeps it on the alias's version (the hot-reload thread)."""

    settings: Settings
    current: Served | None = None
    last_error: str | None = None
    # A version whose bundle failed to load is retried with backoff, not downloaded again every poll.
    _failed: dict = field(default_factory=dict)  # version -> (failures, monotonic time of the next try)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ftflow-serve-")))

    def load_bundle(self, folder: Path, version: str, run_id: str | None, tags: dict) -> Served:
        """The bundle in `folder` loaded and warmed up, ready to be swapped in."""
        # heavy (numpy, pandas, pyarrow via tasks.inference.predictor): loaded when this runs, so importing deploy.model_holder stays light
        from tasks.inference.predictor import OnnxPredictor

        predictor = OnnxPredictor(folder, threads=self.settings.threads, max_chars=self.settings.max_chars)
        predictor.predict(["warm-up"], ["warm-up"] if predictor.needs_pairs else None)  # first run allocates
        return Served(predictor, version, run_id, tags, folder, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def refresh(self) -> bool:
        """Load the alias's version if it is not the one served; True when a new model went live."""
        # heavy (numpy, pandas via tasks.registry.register): loaded when this runs, so importing deploy.model_holder stays light
        from tasks.registry import register

        s = self.settings
        if s.bundle_dir:
            if self.current is None:
                self.current = self.load_bundle(Path(s.bundle_dir), "local", None, {})
                return True
            return False
        assert s.model_name is not None, "Settings needs a model name when no bundle folder is given"
        target = None
        try:
            mv = register.version_by_alias(s.model_name, s.alias)
            if mv is None:
                self.last_error = (
                    f"model '{s.model_name}' has no version with alias '{s.alias}'; "
                    f"promote one with `ftflow promote {s.model_name}`"
                )
                return False
            version = str(mv.version)
            if self.current is not None and self.current.version == version:
                self.last_error = None
                return False
            failures, next_try = self._failed.get(version, (0, 0.0))
            if time.monotonic() < next_try:
                return False  # last_error still says why this version is not served
            target = self._root / f"v{version}"
            folder = register.download_bundle(s.model_name, version, target)
            fresh = self.load_bundle(folder, version, mv.run_id, dict(mv.tags))
        except Exception as e:  # keep serving what we have; /ready and the log say what went wrong
            # /ready shows this to anyone, and MLflow's errors name the tracking URI, password and all.
            self.last_error = tracking.redact_tracking(
                f"loading {s.model_name}@{s.alias} failed: {type(e).__name__}: {e}"
            )
            if target is not None:
                failures += 1
                wait = min(s.poll_seconds * 2**failures, MAX_RETRY_WAIT_S)
                self._failed[version] = (failures, time.monotonic() + wait)
                self.last_error += f" (next try in {wait:.0f} s)"
            log.warning(self.last_error)
            if target is not None and (self.current is None or self.current.folder != target):
                shutil.rmtree(target, ignore_errors=True)  # a half download must not pass for a whole one
            return False
        self._failed.pop(version, None)
        old, self.current = self.current, fresh  # the swap: one reference assignment
        self.last_error = None
        log.info("serving %s version %s%s", s.model_name, version, f" (was {old.version})" if old else "")
        if old is not None and old.folder != fresh.folder:
            # The old session holds its model in memory; requests still on it are unaffected.
            shutil.rmtree(old.folder, ignore_errors=True)
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            self.refresh()

    def start(self) -> None:
        """Load the model now, then follow the alias in a background thread (registry models only)."""
        self.refresh()
        if self.settings.model_name and not self.settings.bundle_dir and self.settings.poll_seconds > 0:
            self._thread = threading.Thread(target=self._watch, name="champion-watcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following the alias and delete the downloaded bundles."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        shutil.rmtree(self._root, ignore_errors=True)
