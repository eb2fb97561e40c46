"""Quiet, useful output: a quickstart-like run prints what a user can act on, and the summary last."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT, small_config

pytestmark = pytest.mark.slow

# Warnings a user may still see, each with what they can do about it.
# Warnings a user can act on, allowed in the output: the tiny run's model is weak on a class.
# Warnings that tell the user something about their model or data, and what to do about it.
ACTIONABLE: tuple[str, ...] = (
    r"classes are weak on test",
    r"does NOT beat the best baseline .*Try ",
    r"train texts \(\d+%\) are longer than max_length \d+ tokens .* would read",
)
WARNING_LINE = re.compile(r"\bWARNING\b|Warning\b|warnings\.warn")


def load_report(model_dir) -> str:
    """The LOAD REPORT transformers logs when it builds a classifier on `model_dir`; '' when none."""
    from transformers import AutoModelForSequenceClassification

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.modeling_utils")
    # The raw report: an earlier flow in this session may have installed tasks.quiet's filter here.
    saved_filters, logger.filters = logger.filters, []
    logger.addHandler(handler)
    try:
        AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    finally:
        logger.removeHandler(handler)
        logger.filters = saved_filters
    return "\n".join(r.getMessage() for r in records if "LOAD REPORT" in r.getMessage())


def test_load_report_is_dropped_for_a_new_head_only(tmp_path):
    """A fresh classifier head is how fine-tuning starts; body weights missing from a checkpoint are not."""
    import shutil

    from safetensors.torch import load_file, save_file

    from tasks.modelling.encode import resolve_model_path
    from tasks.quiet import head_only_load_report

    source = resolve_model_path("minilm")
    normal = load_report(source)
    assert "classifier.weight" in normal and head_only_load_report(normal)

    broken = tmp_path / "broken"  # the MiniLM with one attention weight gone: a damaged checkpoint
    shutil.copytree(source, broken, ignore=shutil.ignore_patterns("model.safetensors", "*.onnx", "onnx"))
    weights = load_file(os.path.join(source, "model.safetensors"))
    save_file(
        {k: v.contiguous() for k, v in weights.items() if "layer.0.attention.self.query" not in k},
        str(broken / "model.safetensors"),
    )
    damaged = load_report(broken)
    assert "layer.0.attention.self.query" in damaged and not head_only_load_report(damaged)


def test_quickstart_output_has_only_actionable_warnings_and_ends_with_the_summary(tmp_path):
    """A small `ftflow run` as a user runs it: no library noise, progress lines with an ETA, the summary last."""
    config = tmp_path / "small.yaml"
    config.write_text(small_config(tmp_path).to_yaml())
    # Unbuffered, stderr into stdout: the lines in the order a terminal shows them.
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        PREFECT_LOGGING_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flows.ops.cli", "run", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    output = proc.stdout
    assert proc.returncode == 0, output[-3000:]

    noise = [
        line
        for line in output.splitlines()
        if WARNING_LINE.search(line) and not any(re.search(a, line) for a in ACTIONABLE)
    ]
    assert not noise, "\n".join(noise)
    for quiet in (
        "TracerWarning",
        "pre-processing before quantization",
        "Add type hints",
        "LOAD REPORT",
        "Loading weights",
        "Writing model shards",
        "Downloading artifacts",
        "database tables",
    ):
        assert quiet not in output, quiet
    step_lines = [line for line in output.splitlines() if re.search(r"step \d+/\d+ train_loss=", line)]
    assert step_lines and all(re.search(r"eta \d+:\d\d$", line) for line in step_lines)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith("MLflow UI:")
    # The summary ends the output: test metrics, then the cheap baselines beside the model, then the UI hint.
    summary = lines[-12:]
    metrics_at = next(i for i, line in enumerate(summary) if line.startswith("test metrics:"))
    baselines_at = next(i for i, line in enumerate(summary) if line.startswith("against cheap baselines"))
    assert metrics_at < baselines_at and any("fine-tuned" in line for line in summary[baselines_at:])


class Terminal(io.StringIO):
    """A text stream that says it is a terminal, to see what a person at one would see."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_replaces_the_step_lines_on_a_terminal_only(monkeypatch):
    from tasks.progress import PROGRESS_RECORD, StepClock, format_eta, progress_bar

    assert [format_eta(s) for s in (None, 5, 75, 3725)] == ["?", "0:05", "1:15", "1:02:05"]
    assert StepClock(total=10, done=4).eta(4) is None  # nothing timed yet (a resumed run starts at 4)

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    handler = logging.StreamHandler(term)
    logging.getLogger().addHandler(handler)
    logger = logging.getLogger("tasks.test_progress")
    try:
        with progress_bar(4, "train") as bar:
            logger.warning("step 2/4 train_loss=0.5 eta 0:01", extra={PROGRESS_RECORD: True})
            logger.warning("step 4/4 val_accuracy=0.8")
            bar.update(4)
        logger.warning("evaluate: batch 1/2 eta 0:01", extra={PROGRESS_RECORD: True})  # no bar open: printed
    finally:
        logging.getLogger().removeHandler(handler)
    out = term.getvalue()
    assert "train: 100%" in out and "4/4" in out
    assert "step 2/4" not in out  # the bar says it
    assert "step 4/4 val_accuracy=0.8" in out and "evaluate: batch 1/2" in out
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # piped: no bar at all
    with progress_bar(4, "train") as bar:
        assert bar is None


SCORE_THREE = """
import json, logging, sys
from prefect import flow
from tasks.modelling.metrics import compute_metrics_for

@flow(log_prints=True)
def score_three() -> dict:
    print("scoring three rows")
    return compute_metrics_for("classification", [0, 1, 1], [0, 1, 0], ["negative", "positive"])

class Keep(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

kept = Keep()
run_logger = logging.getLogger("prefect.flow_runs")
run_logger.setLevel(logging.INFO)
run_logger.addHandler(kept)
metrics = score_three()
sys.stdout.write("RESULT " + json.dumps({"accuracy": metrics["accuracy"], "logs": kept.messages}) + "\\n")
"""


def test_a_log_prints_flow_that_scores_logs_its_prints_and_no_bytecode(prefect_harness, tmp_path):
    """Scoring inside a `log_prints` flow (train, evaluate, promote) left dill's bytecode in the run log.

    The flow runs in a process of its own, as a user's does, against the session's Prefect server, and its
    log is read where Prefect sends it, the flow-run logger. In the session's own process the answer also
    depended on what earlier tests had done to logging and to `print` (twice, in CI, the print never reached
    the logger there), which says nothing about the product.
    """
    import json

    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_LOGGING_LEVEL", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCORE_THREE], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["accuracy"] == pytest.approx(2 / 3)
    logs = result["logs"]
    assert "scoring three rows" in logs  # the flow's own prints still reach its log
    assert not [m for m in logs if re.search(r"\b(RESUME|LOAD_GLOBAL|LOAD_FAST|RETURN_VALUE)\b", m)], logs
    # Nor the process's output: the bytecode went to the run log because stdout was swapped under dill.
    assert not re.search(r"\b(RESUME|LOAD_GLOBAL|LOAD_FAST)\b", proc.stdout + proc.stderr), proc.stdout[-2000:]
