"""`model.head_init: probe` on the real MiniLM: before any update, the head answers what a linear probe
fitted on its own inputs answers, for a single-label and a regression head."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import prepare, small_config

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        (
            "data.source.name=sentiment_scores",
            "data.task=regression",
            "data.max_rows=200",
            "training.loss=mse",
            "training.metric_for_best_model=pearson",
        ),
    ],
    ids=["classification", "regression"],
)
def test_a_probe_started_head_answers_as_the_probe_before_training(tmp_path, overrides):
    import torch

    from tasks.modelling.baselines import fit_linear_cv
    from tasks.modelling.head_init import head_inputs
    from tasks.modelling.train import build_trainer

    cfg = small_config(tmp_path, "model.head_init=probe", "export.enabled=false", *overrides)
    data = prepare(cfg, tmp_path / "run")
    trainer, _, resolved = build_trainer(cfg, data, tmp_path / "run", checkpoints=False)
    assert resolved["head"]["head_init"] == "probe"
    train = trainer.train_dataset
    rows = list(range(len(train)))
    model = trainer.model.eval()
    x = head_inputs(model, train, trainer.data_collator, rows)
    y = np.asarray(train["labels"])
    probe, _ = fit_linear_cv(cfg.data.task, x, y if y.dtype.kind == "f" else y.astype(np.int64))
    batch = trainer.data_collator([{k: train[i][k] for k in ("input_ids", "attention_mask")} for i in rows])
    with torch.inference_mode():
        logits = model(**batch).logits.float().numpy()
    if y.dtype.kind == "f":  # the head's value is the ridge's value
        np.testing.assert_allclose(logits[:, 0], probe.predict(x), atol=1e-3)
    else:  # the head's class probabilities are the logistic model's
        probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
        np.testing.assert_allclose(probs, probe.predict_proba(x), atol=1e-4)
        assert (probs.argmax(1) == y).mean() > 0.6  # and the probe already reads the train rows


def test_head_init_refuses_a_token_head():
    from tasks.modelling.head_init import init_head_from_probe

    with pytest.raises(ValueError, match="head_init probe.*ner"):
        init_head_from_probe(None, [], None, "ner", 0)


def test_the_contrastive_phase_pulls_classes_apart_then_the_head_starts_from_a_probe(tmp_path):
    from tasks.modelling.sizing import resolved_tags
    from tasks.modelling.train import build_trainer

    cfg = small_config(
        tmp_path,
        "data.max_rows=160",
        "training.strategy=contrastive",
        "training.contrastive.pairs_per_row=8",
        "export.enabled=false",
    )
    data = prepare(cfg, tmp_path / "run")
    _, _, resolved = build_trainer(cfg, data, tmp_path / "run", checkpoints=False)
    phase = resolved["contrastive"]
    assert phase["pairs"] > 0 and phase["updates"] == -(-phase["pairs"] // 16)
    assert phase["loss_last_tenth"] < phase["loss_first_tenth"]  # the body learned the pairs
    assert resolved["head"]["head_init"] == "probe"  # the strategy starts the head from a probe
    tags = resolved_tags(resolved)
    assert tags["resolved.head_init"] == "probe" and tags["resolved.contrastive"].startswith(f"{phase['pairs']} pairs")


def test_a_time_budget_ends_the_contrastive_phase_once_its_pace_says_the_rest_would_not_fit(tmp_path):
    from tasks.modelling.contrastive import PACE_UPDATES
    from tasks.modelling.train import build_trainer

    cfg = small_config(
        tmp_path,
        "data.max_rows=160",
        "training.strategy=contrastive",
        "training.contrastive.pairs_per_row=8",
        "training.contrastive.max_seconds=1",  # passed before the pace is read: only the timed updates run
        "export.enabled=false",
    )
    data = prepare(cfg, tmp_path / "run")
    _, _, resolved = build_trainer(cfg, data, tmp_path / "run", checkpoints=False)
    phase = resolved["contrastive"]
    assert phase["time_capped"] and phase["updates"] == 1 + PACE_UPDATES
    assert phase["pairs"] == phase["updates"] * 16 and phase["seconds"] >= 1
