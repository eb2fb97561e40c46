"""One training per model at a time and the retrain cooldown, on a real Prefect server with real processes.

The slot holders are separate Python processes (as two serving processes, or two machines, would be); the
flows under test are the real nightly and retrain, refused before they train, so no test here trains a model
except where it fails on purpose at its first stage.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, small_config

pytestmark = pytest.mark.slow

# A flow in its own process that holds a model's slot for `hold` seconds; it prints when it held it.
HOLDER = """
import json, sys, time
from prefect import flow
from flows.guards import TrainingBusy, training_slot

@flow(name="slot-holder")
def hold(model: str, hold: float, wait_minutes: float, start_at: float) -> dict:
    time.sleep(max(0.0, start_at - time.time()))  # both processes ask at the same moment
    try:
        with training_slot(model, wait_minutes):
            entered = time.time()
            print("HELD", flush=True)
            time.sleep(hold)
            return {"entered": entered, "left": time.time()}
    except TrainingBusy as busy:
        return {"busy": str(busy)}

print("RESULT " + json.dumps(hold(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))))
"""

# The real retrain flow in its own process; prints its final state.
RETRAIN = """
import json, sys
from flows.retrain import retrain
from tasks.config import PipelineConfig

state = retrain(config=PipelineConfig.model_validate_json(sys.argv[1]), reason=sys.argv[2], return_state=True)
print("RESULT " + json.dumps({"type": state.type.value, "message": state.message or ""}))
"""


def api_env() -> dict[str, str]:
    """This process's environment with the harness's server as the children's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(ROOT))


def start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=api_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def result_of(proc: subprocess.Popen, timeout: float = 300) -> dict:
    out, _ = proc.communicate(timeout=timeout)
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, text[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def wait_until_held(proc: subprocess.Popen, timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if line.startswith(b"HELD"):
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"the holder never held its slot:\n{seen.decode(errors='replace')[-3000:]}")


def test_two_trainings_asked_together_take_turns(prefect_harness):
    """Two processes ask for one model's slot at the same moment: one holds it, the other waits for its end."""
    start_at = str(time.time() + 25)  # both have imported Prefect by then, even on a busy machine
    procs = [start(HOLDER, "guarded-model", "4", "5", start_at) for _ in range(2)]
    first, second = sorted((result_of(p) for p in procs), key=lambda r: r.get("entered", 0))
    assert "busy" not in first and "busy" not in second, (first, second)
    assert second["entered"] >= first["left"], (first, second)  # never both inside


def test_another_models_training_does_not_wait(prefect_harness):
    holder = start(HOLDER, "busy-model", "60", "1", "0")
    try:
        wait_until_held(holder)
        other = start(HOLDER, "free-model", "0", "0", "0")
        assert "entered" in result_of(other)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("which", ["nightly", "retrain"])
def test_a_training_that_finds_the_slot_taken_waits_then_ends_cancelled_saying_why(prefect_harness, tmp_path, which):
    from flows.nightly import nightly
    from flows.retrain import retrain

    model = f"slot-taken-{which}"
    cfg = small_config(tmp_path, f"registry.model_name={model}", "registry.training_wait_minutes=0.05")
    holder = start(HOLDER, model, "120", "1", "0")
    try:
        wait_until_held(holder)
        t0 = time.monotonic()
        state = (nightly if which == "nightly" else retrain)(config=cfg, return_state=True)
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    assert state.type.value == "CANCELLED", state
    assert f"another training of {model}" in state.message and "registry.training_wait_minutes" in state.message
    assert "trained nothing" in state.message
    assert waited >= 3  # it waited its 0.05 minutes before giving up
    assert not (tmp_path / "runs").exists()  # no run folder: nothing was trained


def test_a_retrain_inside_the_cooldown_is_refused_naming_when_it_may_run(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.guards import retrain_tag
    from flows.retrain import retrain

    model = "cooling-model"
    cfg = small_config(tmp_path, f"registry.model_name={model}", "monitoring.retrain_cooldown_hours=6")

    @__import__("prefect").flow(name="earlier-retrain")
    def earlier() -> None:
        pass

    with get_client(sync_client=True) as client:  # a retrain of this model that began a moment ago
        run = client.create_flow_run(earlier, tags=[retrain_tag(model)])
        client.set_flow_run_state(run.id, Running())
        began = client.read_flow_run(run.id).start_time.astimezone(dt.UTC)
        other = client.create_flow_run(earlier, tags=[retrain_tag("another-model")])
        client.set_flow_run_state(other.id, Running())
    state = retrain(config=cfg, reason="drift", return_state=True)
    assert state.type.value == "CANCELLED", state
    may_run = began + dt.timedelta(hours=6)
    assert f"retrain of {model} refused" in state.message and str(run.id) in state.message
    assert f"may run after {may_run:%Y-%m-%d %H:%M:%S} UTC" in state.message and "force=true" in state.message
    assert not (tmp_path / "runs").exists()
    # Another model's retrain is not this one's: its cooldown does not apply (the check alone, no training).
    from flows.guards import cooldown_refusal

    assert cooldown_refusal("third-model", 6) is None
    assert cooldown_refusal(model, 0) is None  # 0: no cooldown
    assert cooldown_refusal(model, 6, now=began + dt.timedelta(hours=6, seconds=1)) is None


def test_two_retrains_asked_together_train_once(prefect_harness, tmp_path):
    """Both pass the first cooldown check; the one that gets the slot second is refused by the cooldown.

    The data path does not exist, so the one that trains fails at its first stage: training started.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    from flows.guards import retrain_tag

    model = "together-model"
    cfg = small_config(
        tmp_path,
        f"registry.model_name={model}",
        "registry.experiment=guards-tests",
        "data.source.kind=file",
        f"data.source.path={tmp_path / 'missing.csv'}",
    )
    procs = [start(RETRAIN, cfg.model_dump_json(), f"drift {i}") for i in range(2)]
    results = sorted((result_of(p) for p in procs), key=lambda r: r["type"])
    assert [r["type"] for r in results] == ["CANCELLED", "FAILED"], results
    assert f"retrain of {model} refused" in results[0]["message"], results
    # It failed in the fine-tune subflow of nightly, which shares the retrain's slot instead of waiting for it.
    assert "missing.csv" in results[1]["message"], results
    with get_client(sync_client=True) as client:
        marked = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[retrain_tag(model)])))
    assert len(marked) == 1 and marked[0].state_type.value == "FAILED"
