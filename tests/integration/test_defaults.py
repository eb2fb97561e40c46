"""Defaults that fit the data, on the real Trainer and the offline MiniLM: a tiny train split gets
more optimizer updates than its epochs give, is evaluated several times and keeps its best
checkpoint, and `model.max_length: auto` becomes a number that the model folder carries and
evaluation reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import prepare, small_config

pytestmark = pytest.mark.slow


def test_a_tiny_train_split_trains_to_the_update_floor_and_auto_length_reaches_the_model_folder(tmp_path):
    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.train import train_model

    cfg = small_config(
        tmp_path,
        "data.max_rows=80",
        "model.max_length=auto",
        "training.min_updates=24",  # 1 epoch of ~64 rows in batches of 16 gives 4
        "training.max_epochs_auto=8",
        "training.evaluations_auto=4",
        "training.learning_rate=1e-4",
        "training.metric_for_best_model=loss",  # moves at every evaluation, even on 7 validation rows
        "export.enabled=false",
    )
    clean_ref = prepare(cfg, tmp_path / "run")
    summary = train_model(clean_ref, cfg, tmp_path / "run").summary
    schedule = summary["resolved_defaults"]["schedule"]
    per_epoch = schedule["updates_per_epoch"]
    assert schedule["raised"] and schedule["configured_epochs"] == 1.0 and per_epoch * 1 < 24
    assert schedule["updates"] >= 24 and summary["global_step"] > per_epoch  # the floor raised the updates
    # Evaluated steps-based, about evaluations_auto times; the best evaluation's checkpoint was kept.
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["log_history"]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    last = summary["global_step"]
    assert len(evals) >= 3 and all(step % schedule["eval_steps"] == 0 or step == last for step, _ in evals)
    best_step, best = min(evals, key=lambda e: (e[1], e[0]))  # the lowest loss; the first of equal ones
    assert summary["best_metric"] == pytest.approx(best)
    assert summary["best_checkpoint"].endswith(f"checkpoint-{best_step}")
    # max_length auto: a number, recorded where evaluation, export and serving read it.
    length = summary["resolved_defaults"]["max_length"]
    meta = json.loads((tmp_path / "run" / "model" / "finetune_flow.json").read_text())
    assert isinstance(meta["max_length"], int) and meta["max_length"] == length["max_length"]
    assert meta["max_length"] % 8 == 0 and 32 <= meta["max_length"] <= 512
    assert meta["training"]["epochs"] == schedule["epochs"]  # the values trained with
    evaluation = evaluate_model(tmp_path / "run" / "model", clean_ref, cfg, tmp_path / "run", "test")
    card = Path(evaluation.files["model_card"]).read_text()
    assert f"max length {meta['max_length']}" in card and "truncated at auto" not in card
