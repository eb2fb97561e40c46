"""The baselines: a paired interval checked against a plain resampling loop, the verdict, the bag of words
fitted and scored on real splits, and the promotion gate's refusal of a model below its baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import load_config
from tasks.io import write_frames
from tasks.modelling.baselines import compare_with_baselines, comparison_metrics, fit_baselines, probe_sample
from tasks.modelling.confidence import paired_difference_interval
from tasks.modelling.metrics import compute_metrics_for
from tasks.registry.promote import failed_checks
from tasks.results import BaselineResult, CleanResult

PASSED = {"parity_passed": "True", "data_validation": "passed"}


def answers(n: int, right: float, seed: int, refs: np.ndarray | None = None):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 2, n) if refs is None else refs
    return np.where(rng.random(n) < right, refs, 1 - refs), refs


def test_paired_interval_matches_a_plain_resampling_loop_and_is_narrower_than_unpaired():
    a, refs = answers(400, 0.85, 1)
    b, _ = answers(400, 0.80, 2, refs)
    low, high = paired_difference_interval("classification", "accuracy", a.tolist(), b.tolist(), refs.tolist())
    rng = np.random.default_rng(11)
    slow = []
    for _ in range(1000):
        i = rng.integers(0, len(refs), len(refs))
        slow.append((a[i] == refs[i]).mean() - (b[i] == refs[i]).mean())
    assert low == pytest.approx(np.percentile(slow, 2.5), abs=0.01)
    assert high == pytest.approx(np.percentile(slow, 97.5), abs=0.01)
    # Same answers on a row cancel: the difference of identical answer sets has a zero-width interval.
    assert paired_difference_interval("classification", "f1", a.tolist(), a.tolist(), refs.tolist()) == (0.0, 0.0)


def baseline_result(tmp_path: Path, preds: np.ndarray, refs: np.ndarray) -> BaselineResult:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"bag_of_words": preds}).to_parquet(path)
    score = compute_metrics_for("classification", preds.tolist(), refs.tolist())["f1"]
    scores = {"bag_of_words": {"test": {"f1": score, "accuracy": 0.5}, "chosen": {}, "seconds": 1.0, "train_rows": 9}}
    return BaselineResult(dir=str(tmp_path), metric="f1", scores=scores, predictions=str(path), seconds=1.0)


def test_verdict_beats_only_beyond_the_interval(tmp_path):
    baseline, refs = answers(600, 0.75, 3)
    result = baseline_result(tmp_path, baseline, refs)
    strong, _ = answers(600, 0.95, 4, refs)
    close, _ = answers(600, 0.76, 5, refs)
    win = compare_with_baselines(result, "classification", strong.tolist(), refs.tolist(), None)
    tie = compare_with_baselines(result, "classification", close.tolist(), refs.tolist(), None)
    assert win["beats"] and win["difference_ci_low"] > 0 and "beats the best baseline (bag_of_words)" in win["text"]
    assert not tie["beats"] and tie["difference_ci_low"] < 0 < tie["difference_ci_high"]
    assert "does NOT beat" in tie["text"] and "registry.allow_below_baseline" in tie["text"]
    metrics = comparison_metrics(result, tie)
    assert (
        metrics["beats_baseline"] == 0.0
        and metrics["baseline_bag_of_words_test_f1"] == result.scores["bag_of_words"]["test"]["f1"]
    )


def test_bag_of_words_is_fitted_on_train_chosen_on_validation_and_scored_on_test(tmp_path):
    """Words decide the label: the baseline must find them; its test F1 is the metric of its written answers."""
    rng = np.random.default_rng(0)
    good, bad = ["great", "lovely", "superb"], ["awful", "dull", "boring"]
    rows = []
    for i in range(300):
        label = "positive" if i % 2 else "negative"
        word = rng.choice(good if label == "positive" else bad)
        rows.append({"text": f"the film {i % 7} was {word} {rng.choice(['really', 'quite', ''])}", "label": label})
    df = pd.DataFrame(rows)
    splits = write_frames({"train": df[:200], "validation": df[200:250], "test": df[250:]}, tmp_path / "clean")
    data = CleanResult(str(tmp_path), splits, "", ["negative", "positive"], {}, "", "d")
    cfg = load_config(None, ["baselines.kinds=[bag_of_words]"])
    result = fit_baselines(data, cfg, tmp_path / "run")
    bow = result.scores["bag_of_words"]
    assert set(result.scores) == {"bag_of_words"} and bow["test"]["accuracy"] > 0.95
    written = pd.read_parquet(result.predictions)["bag_of_words"].tolist()
    refs = [1 if v == "positive" else 0 for v in df[250:]["label"]]
    assert bow["test"]["f1"] == compute_metrics_for("classification", written, refs)["f1"]
    assert bow["test"]["f1_ci_low"] <= bow["test"]["f1"] <= bow["test"]["f1_ci_high"]
    assert (tmp_path / "run" / "baselines" / "metrics.json").exists()
    none = fit_baselines(data, load_config(None, ["baselines.enabled=false"]), tmp_path / "run2")
    assert none.scores == {} and none.predictions is None


def test_probe_sample_keeps_every_label_in_its_share():
    df = pd.DataFrame({"text": [str(i) for i in range(1000)], "label": ["a"] * 900 + ["b"] * 100})
    sample = probe_sample(df, 200, seed=0)
    assert len(sample) == 200 and (sample["label"] == "b").sum() == 20
    assert probe_sample(df, 200, seed=0).equals(sample) and probe_sample(df, 5000, 0) is df


def test_gate_refuses_a_model_below_its_baseline_unless_allowed():
    below = {**PASSED, "beats_baseline": "false", "best_baseline": "bag_of_words", "best_baseline_score": "0.9"}
    (reason,) = failed_checks(below)
    assert "did not beat the best baseline (bag_of_words" in reason and "--allow-below-baseline" in reason
    assert failed_checks(below, allow_below_baseline=True) == []
    assert failed_checks({**PASSED, "beats_baseline": "true"}) == []
    assert failed_checks(PASSED) == []  # no baseline ran (NER, older versions): nothing to hold against it
