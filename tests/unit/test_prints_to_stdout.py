"""`tasks.quiet.prints_to_stdout`: a library's stdout capture works under Prefect's `log_prints` print.

Prefect's `log_prints` replaces `print` with one that sends what goes to stdout to the run log. dill's
`nestedglobals` (which the `evaluate` metrics reach through datasets' fingerprinting) swaps sys.stdout
for a buffer and reads a function's globals from `dis.dis`'s printed bytecode: under that print it read
nothing, and the bytecode went to the run log. The stand-in below routes prints as Prefect's does.
"""

from __future__ import annotations

import builtins
import io
import json
import math
import sys
import threading

import dill.detect
import pytest

from tasks.quiet import prints_to_stdout


def uses_two_modules() -> str:
    return json.dumps(math.pi)


@pytest.fixture
def run_log(monkeypatch) -> list[str]:
    """`print` patched as `log_prints` patches it: to stdout (or no file) means to the run log."""
    lines: list[str] = []
    real = builtins.print

    def print_as_log(*args, **kwargs):
        if kwargs.get("file") in (None, sys.stdout, sys.stderr):
            buffer = io.StringIO()
            real(*args, **{**kwargs, "file": buffer})
            lines.append(buffer.getvalue())
        else:
            real(*args, **kwargs)

    monkeypatch.setattr(builtins, "print", print_as_log)
    return lines


def test_under_log_prints_a_stdout_capture_reads_nothing_and_the_log_gets_bytecode(run_log):
    """The defect as it was, so the test below proves something: no globals found, bytecode in the log."""
    assert "json" not in dill.detect.nestedglobals(uses_two_modules)
    assert any("LOAD_GLOBAL" in line for line in run_log)


def test_within_prints_to_stdout_the_capture_sees_the_bytecode_and_the_log_gets_nothing(run_log):
    patched = builtins.print
    with prints_to_stdout():
        found = dill.detect.nestedglobals(uses_two_modules)
    assert {"json", "math"} <= set(found)
    assert run_log == []
    assert builtins.print is patched  # Prefect's print is back for the rest of the run


def test_print_within_writes_as_the_builtin_does(monkeypatch):
    cases = [
        ((1, "a", None), {}),
        (("x", "y"), {"sep": "-", "end": "!"}),
        ((), {}),
        (("z",), {"sep": None, "end": None}),
    ]
    for args, kwargs in cases:
        expected, got, to_file = io.StringIO(), io.StringIO(), io.StringIO()
        builtins.print(*args, **kwargs, file=expected)
        monkeypatch.setattr(sys, "stdout", got)
        with prints_to_stdout():
            print(*args, **kwargs)
            print(*args, **kwargs, file=to_file, flush=True)
        monkeypatch.undo()
        assert got.getvalue() == expected.getvalue() == to_file.getvalue(), (args, kwargs)


def test_nested_and_concurrent_uses_restore_the_print_they_found(run_log):
    patched = builtins.print
    inside = threading.Event()
    release = threading.Event()

    def other_thread():
        with prints_to_stdout():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other_thread)
    t.start()
    assert inside.wait(10)
    with prints_to_stdout(), prints_to_stdout():
        assert builtins.print is not patched
    assert builtins.print is not patched  # the other thread is still inside
    release.set()
    t.join(10)
    assert builtins.print is patched
