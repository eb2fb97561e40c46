"""Progress of the long stages: a bar in an interactive terminal, compact lines with an ETA in the log.

The train and evaluate stages log one compact line every few steps (the Prefect run log keeps
them). When stderr is a terminal they also draw a bar (step, loss, ETA); while it is open, the
console skips those compact lines (the bar says the same) and prints every other line above it.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

from tqdm import tqdm

# Set on a log record (`extra`) that repeats what an open bar shows; the console skips it then.
PROGRESS_RECORD = "ftflow_progress"


def format_eta(seconds: float | None) -> str:
    """Seconds as H:MM:SS (or M:SS), '?' while unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StepClock:
    """Estimates the time left from the steps done since it started (resumed steps excluded)."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.first, self.started = total, done, time.monotonic()

    def eta(self, done: int) -> float | None:
        ran = done - self.first
        if ran <= 0:
            return None
        return (time.monotonic() - self.started) / ran * max(self.total - done, 0)


def interactive() -> bool:
    """True when stderr is a terminal a person watches (not a pipe, a file or a worker's log)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _bars_open() -> bool:
    return bool(getattr(tqdm, "_instances", None))  # a WeakSet: closed or dropped bars leave it


class _ConsoleAroundBars(logging.Filter):
    """On a terminal console handler: while a bar is open, skip progress lines and print the rest above it.

    Installed once per handler and inert while no bar is open, so a training that fails midway
    (no callback runs then) leaves the console as it was.
    """

    def __init__(self, handler: logging.Handler):
        super().__init__()
        self.own_emit = handler.emit
        handler.emit = self.emit_above_bars  # type: ignore[method-assign]  # on purpose: this handler's emit only
        handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, PROGRESS_RECORD, False) and _bars_open())

    def emit_above_bars(self, record: logging.LogRecord) -> None:
        if not _bars_open():
            return self.own_emit(record)
        with tqdm.external_write_mode(file=sys.stderr):
            self.own_emit(record)


def _guard_terminal_handlers() -> None:
    for handler in logging.getLogger().handlers:
        terminal = isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "isatty", lambda: False)()
        if terminal and not any(isinstance(f, _ConsoleAroundBars) for f in handler.filters):
            _ConsoleAroundBars(handler)


@contextmanager
def progress_bar(total: int, desc: str, initial: int = 0, unit: str = "step"):
    """A tqdm bar on stderr when interactive, else None; console log lines print above it meanwhile."""
    if not interactive():
        yield None
        return
    _guard_terminal_handlers()
    bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
    )
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def counted_calls(fn, total: int, desc: str, logger: logging.Logger, lines: int = 5):
    """`fn` (one batch per call) wrapped to advance a bar and log about `lines` lines with an ETA."""
    clock, every, done = StepClock(total), max(1, -(-total // lines)), 0
    with progress_bar(total, desc, unit="batch") as bar:

        def counted(*args, **kwargs):
            nonlocal done
            out = fn(*args, **kwargs)
            done += 1
            if bar is not None:
                bar.update(1)
            if done % every == 0 and done < total:
                logger.info(
                    "%s: batch %d/%d eta %s",
                    desc,
                    done,
                    total,
                    format_eta(clock.eta(done)),
                    extra={PROGRESS_RECORD: True},
                )
            return out

        yield counted
