"""Checkpoints: finding the last complete one, and the digests that decide whether a run may resume."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
# The config sections a training depends on: a checkpoint or a finished model belongs to these values.
TRAINING_SECTIONS = ("data", "model", "training")
CHECKPOINTS = "checkpoints"
MODEL = "model"
SPEC = "train_spec.json"
# What a resumed run must share with the run that wrote the checkpoints.
RESUME_MUST_MATCH = {
    "data (content digest)": lambda spec: spec["data"].get("digest"),
    "label set": lambda spec: spec["data"].get("labels"),
    "model": lambda spec: (spec["config"]["model"], spec["config"]["data"]["task"]),
}


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_complete(folder: Path) -> bool:
    """True when a checkpoint's trainer_state.json parses and its weights are there.

    A kill or a full disk while saving leaves a checkpoint without its state file, with a
    truncated one, or with the state but no weights; resuming from any of them would fail.
    """
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(state, dict)
        and "global_step" in state
        and any((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in WEIGHT_FILES)
    )


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint in `folder` (an incomplete newer one is passed over), or None."""
    if not folder.is_dir():
        return None
    steps = sorted(
        ((int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        reverse=True,
    )
    for _, path in steps:
        if checkpoint_complete(path):
            return str(path)
        log.warning("checkpoint %s is incomplete (cut off while saving?); using the one before it", path)
    return None


def spec_digest(spec: dict) -> str:
    """Digest of what a training depends on (data, model, training settings), to recognise a finished one."""
    used = {k: spec["config"][k] for k in TRAINING_SECTIONS}
    blob = json.dumps({"config": used, "data": spec["data"]}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def finished_training(run_dir: Path, spec: dict) -> dict | None:
    """The summary of a training that already finished in run_dir for this config and data, else None.

    Resuming from its last checkpoint would not be a no-op: the Trainer clears an early stop
    on resume and would train the epochs the stop had skipped.
    """
    summary_path, meta_path = run_dir / "train_summary.json", run_dir / MODEL / "finetune_flow.json"
    if spec.get("trial") or not summary_path.is_file() or not meta_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("spec_digest") == spec_digest(spec) else None


def check_resumable(run_dir: Path, spec: dict) -> None:
    """Refuse to resume checkpoints made for other data or another model in the same run folder."""
    previous_path = run_dir / SPEC
    if not previous_path.exists() or last_checkpoint(run_dir / CHECKPOINTS) is None:
        return
    before, now = json.loads(previous_path.read_text()), spec
    differ = [name for name, get in RESUME_MUST_MATCH.items() if get(before) != get(now)]
    if differ:
        raise ValueError(
            f"cannot resume in {run_dir}: its checkpoints were trained with a different {', '.join(differ)}. "
            f"Resume with the same data and model, or start a new run (or delete {run_dir / CHECKPOINTS})."
        )
