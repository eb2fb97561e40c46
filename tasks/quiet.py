"""Known-harmless library warnings and log lines, filtered at their source by message and module.

Each entry names the message, the module that emits it and why a user cannot act on it;
anything not listed here still reaches the console and the run log. The flows and stages call
`silence_known_noise()` where they start; it only adds narrow filters, never a blanket one,
and calling it again adds nothing. `prints_to_stdout()` keeps a library's own stdout capture working
inside a Prefect run that logs prints (so its output stays out of the run log).
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# (message regex, module regex, category, why it is harmless). The module regex matches the
# module the warning is attributed to, as `warnings.filterwarnings(module=...)` does.
KNOWN_WARNINGS = (
    (
        r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
        r"transformers\.",
        "TracerWarning",
        "The ONNX export traces an encoder whose mask-shape branches are the same for every input; "
        "the parity check on real rows of several lengths proves the traced graph right.",
    ),
    (
        r"Exporting aten::index operator of advanced indexing",
        r"torch\.onnx\.",
        "UserWarning",
        "It concerns negative indices, which BERT-family encoders and heads never use; the parity "
        "check would fail the export if they did.",
    ),
)

# (logger name, emitting file path part or None, message regex, why it is harmless)
KNOWN_LOG_LINES = (
    (
        "root",
        "onnxruntime/quantization",
        r"Please consider to run pre-processing before quantization",
        "Pre-processing fails on dynamo exports kept as external data; the int8 gate measures the "
        "quantised model's metric against fp32 on held-out rows instead.",
    ),
    (
        "mlflow.store.db.utils",
        None,
        r"Creating initial MLflow database tables|Updating database tables",
        "MLflow's schema set-up of a new local store; nothing to do.",
    ),
    (
        "prefect",
        None,
        r"Stopping temporary server on",
        "The temporary Prefect server's exit note; printed after the run summary, it would push the "
        "summary off the last line.",
    ),
    (
        "mlflow.pyfunc",
        None,
        r"Validating input example against model signature",
        "A progress note; a failed validation raises and stays visible.",
    ),
    # MLflow raises this one under its own `simplefilter("once")`, which outranks any warnings
    # filter; it is dropped where Prefect logs captured warnings (logger py.warnings), by file and text.
    (
        "py.warnings",
        None,
        r"mlflow/pyfunc/utils/data_validation\.py:\d+: UserWarning: .*Add type hints to the `predict`",
        "Advice to the author of the pyfunc wrapper (this project); the logged model carries an "
        "explicit signature from its input example.",
    ),
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The heads a task model adds on a pretrained body (new, so missing from the checkpoint), and the
# pre-training heads a body checkpoint carries that a task model drops.
NEW_HEAD_PREFIXES = ("classifier.", "score.", "qa_outputs.")
PRETRAINING_HEAD_PREFIXES = ("cls.", "lm_head.", "pooler.")
REPORT_STATUSES = ("MISSING", "UNEXPECTED", "MISMATCH", "CONVERSION")


def head_only_load_report(message: str) -> bool:
    """True when a transformers LOAD REPORT lists only a new task head and dropped pre-training heads.

    That is how every fine-tuning starts. A report naming any other key (body weights missing,
    shapes mismatched) is kept: the checkpoint is then not the one the user meant.
    """
    if "LOAD REPORT" not in message:
        return False
    rows = [[c.strip() for c in ANSI.sub("", line).split("|")] for line in message.splitlines()]
    rows = [r for r in rows if len(r) >= 2 and r[1] in REPORT_STATUSES]
    return bool(rows) and all(
        (status == "MISSING" and key.startswith(NEW_HEAD_PREFIXES))
        or (status == "UNEXPECTED" and key.startswith(PRETRAINING_HEAD_PREFIXES))
        for key, status, *_ in rows
    )


def _stream_print(*values: object, sep: str | None = " ", end: str | None = "\n", file=None, flush: bool = False):
    """The builtin `print`'s behaviour: to `file`, else to sys.stdout as it is at the call."""
    stream = sys.stdout if file is None else file
    if stream is None:  # no console (pythonw): the builtin prints nothing either
        return
    stream.write((" " if sep is None else sep).join(map(str, values)) + ("\n" if end is None else end))
    if flush:
        stream.flush()


_print_lock = threading.Lock()
_print_depth = 0
_print_saved: Any = None  # the `print` the first entry replaced


@contextmanager
def prints_to_stdout() -> Iterator[None]:
    """Within, `print` writes to sys.stdout as the builtin does, also inside a Prefect run with `log_prints`.

    `log_prints` replaces `print` with one that sends what goes to stdout to the run log. A library that
    captures stdout by swapping sys.stdout then reads nothing: dill's `nestedglobals`, which the `evaluate`
    metrics' fingerprinting (datasets) calls, reads a function's globals from `dis.dis` output, so it found
    none and the run log got the function's bytecode instead. Nested and concurrent uses share one swap;
    for its duration another thread's prints go to stdout too, not to the run log: wrap library calls only.
    """
    global _print_depth, _print_saved
    with _print_lock:
        if _print_depth == 0:
            _print_saved = builtins.print
            builtins.print = _stream_print
        _print_depth += 1
    try:
        yield
    finally:
        with _print_lock:
            _print_depth -= 1
            if _print_depth == 0:
                builtins.print = _print_saved
                _print_saved = None


class _DropKnownLines(logging.Filter):
    """Drops one logger's records whose message matches a known-harmless pattern (from one file when given)."""

    def __init__(self, pattern: str, path_part: str | None):
        super().__init__()
        self.pattern, self.path_part = re.compile(pattern), path_part

    def filter(self, record: logging.LogRecord) -> bool:
        if self.path_part and self.path_part not in record.pathname.replace("\\", "/"):
            return True
        return not self.pattern.search(record.getMessage())


class _DropHeadOnlyLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not head_only_load_report(record.getMessage())


_installed: set[str] = set()


def silence_known_noise(torch_stage: bool = False) -> None:
    """Install the filters above once per process; torch_stage: also those of torch and transformers."""
    if "base" not in _installed:
        _installed.add("base")
        for logger_name, path_part, pattern, _why in KNOWN_LOG_LINES:
            logging.getLogger(None if logger_name == "root" else logger_name).addFilter(
                _DropKnownLines(pattern, path_part)
            )
        for message, module, category, _why in KNOWN_WARNINGS:
            if category == "UserWarning":
                warnings.filterwarnings("ignore", message=message, category=UserWarning, module=module)
        # MLflow's per-file download bar wraps into one long line in logs and says nothing a user needs.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if torch_stage and "torch" not in _installed:
        _installed.add("torch")
        # heavy (torch, transformers): loaded when this runs, so importing tasks.quiet stays light
        from torch.jit import TracerWarning
        from transformers.utils import logging as hf_logging

        for message, module, category, _why in KNOWN_WARNINGS:
            if category == "TracerWarning":
                warnings.filterwarnings("ignore", message=message, category=TracerWarning, module=module)
        logging.getLogger("transformers.modeling_utils").addFilter(_DropHeadOnlyLoadReport())
        # The per-model "Loading weights" and "Writing model shards" bars flash for a fraction of a
        # second each; the train and evaluate stages show their own progress (tasks/progress.py).
        hf_logging.disable_progress_bar()
