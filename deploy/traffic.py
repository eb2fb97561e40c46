"""What the service does with each answer beside replying: request ids, the log, the shadow, the canary.

The request's own thread only builds log rows and appends to bounded queues: the prediction log's
writer thread (tasks/monitoring/prediction_log.py) and the shadow worker below do the rest. A full
queue drops its oldest entry and counts it; a request never waits for either.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from deploy.model_holder import ModelHolder
from tasks.monitoring.prediction_log import (
    PredictionLogger,
    is_request_id,
    item_request_id,
    new_request_id,
    prediction_record,
)

log = logging.getLogger("ftflow.serve")

CANARY_BUCKETS = 10_000  # canary shares are honoured to 0.01%


def request_ids(header: str | None) -> tuple[str, str | None]:
    """(the request's id, the client's X-Request-ID or None): the id is always a fresh one of the server's,
    the key /feedback corrects; a valid X-Request-ID is only logged and answered beside it, to correlate."""
    return new_request_id(), header if is_request_id(header) else None


def routes_to_canary(request_id: str, percent: float) -> bool:
    """Whether this request goes to the canary: a stable hash of an id (the client's when it sent one, so a
    retried request lands on the same model)."""
    if percent <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") % CANARY_BUCKETS
    return bucket < percent / 100 * CANARY_BUCKETS


def log_answers(
    logger: PredictionLogger,
    ids: list[str],
    answers: list[dict],
    texts: list[str],
    pairs: list[str] | None,
    model_name: str,
    version: str,
    role: str,
    latency_ms: float,
    client_id: str | None = None,
    client: str | None = None,
) -> None:
    """One log row per answered text (the request's model latency on each row); `client`: the token's holder."""
    for i, (rid, answer, text) in enumerate(zip(ids, answers, texts)):
        logger.log(
            prediction_record(
                answer,
                text,
                model_name,
                version,
                latency_ms,
                role=role,
                text_pair=pairs[i] if pairs else None,
                request_id=rid,
                client_request_id=client_id,
                client=client,
            )
        )


def text_ids(request_id: str, count: int, batch: bool) -> list[str]:
    """The id of each text of a request (see item_request_id)."""
    return [item_request_id(request_id, i, batch) for i in range(count)]


@dataclass(frozen=True)
class ShadowJob:
    ids: list[str]
    texts: list[str]
    pairs: list[str] | None
    served_version: str
    client_id: str | None = None
    client: str | None = None  # the token's holder, so the shadow's rows belong to the same client


class ShadowRunner:
    """Answers requests again with the shadow alias's model in a worker thread, and logs those answers.

    `submit` appends to a bounded queue (drop-oldest, counted); the worker skips a job when the shadow
    model is not loaded or is the very version that answered (nothing to compare).
    """

    def __init__(self, holder: ModelHolder, logger: PredictionLogger | None, model_name: str, max_queue: int):
        self.holder, self.logger, self.model_name = holder, logger, model_name
        self._queue: deque[ShadowJob] = deque(maxlen=max_queue)
        self._lock = threading.Condition()
        self._closed = False
        self._busy = False
        self.answered = self.dropped = self.skipped = self.failed = 0
        self._thread = threading.Thread(target=self._run, name="shadow-worker", daemon=True)
        self._thread.start()

    def submit(self, job: ShadowJob) -> None:
        """Queue a request for the shadow model; drops the oldest waiting one when the queue is full."""
        with self._lock:
            if self._closed:
                return
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(job)
            self._lock.notify()

    def _next(self) -> ShadowJob | None:
        with self._lock:
            while not self._queue and not self._closed:
                self._lock.wait()
            self._busy = bool(self._queue)
            return self._queue.popleft() if self._queue else None

    def _run(self) -> None:
        while (job := self._next()) is not None:
            shadow = self.holder.current
            try:
                if shadow is None or shadow.version == job.served_version:
                    self.skipped += 1
                    continue
                t = time.perf_counter()
                answers = shadow.predictor.predict(job.texts, job.pairs)
                latency_ms = (time.perf_counter() - t) * 1000
                if self.logger is not None:
                    log_answers(
                        self.logger,
                        job.ids,
                        answers,
                        job.texts,
                        job.pairs,
                        self.model_name,
                        shadow.version,
                        "challenger",
                        latency_ms,
                        job.client_id,
                        job.client,
                    )
                self.answered += 1
            except Exception:  # a failing shadow must never touch the served answers; counted and logged
                self.failed += 1
                log.exception(
                    "shadow model %s version %s failed on a request", self.model_name, getattr(shadow, "version", "?")
                )
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued request was answered by the shadow model; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Answer what is queued (up to `timeout_s`), then stop the worker."""
        self.drain(timeout_s)
        with self._lock:
            self._closed = True
            dropped_at_close = len(self._queue)
            self._queue.clear()
            self.dropped += dropped_at_close
            self._lock.notify_all()
        self._thread.join(timeout_s)

    def stats(self) -> dict:
        with self._lock:
            return {
                "answered": self.answered,
                "dropped": self.dropped,
                "skipped": self.skipped,
                "failed": self.failed,
                "queued": len(self._queue),
            }
