"""The label pairs of the contrastive phase: a row with its own class (1) and another class (0), bounded."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.config import load_config
from tasks.config.training import ContrastiveConfig
from tasks.modelling.contrastive import draw_pairs


def test_pairs_match_their_targets_and_never_pair_a_row_with_itself():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    left, right, target = draw_pairs(labels, ContrastiveConfig(pairs_per_row=10), seed=3)
    y = np.asarray(labels)
    assert len(target) == 2 * 5 * len(labels)  # pairs_per_row / 2 rounds, one pair of each kind per row
    assert ((y[left] == y[right]) == (target == 1.0)).all()
    assert (left != right).all()
    assert (target == 1.0).sum() == (target == 0.0).sum()


def test_max_pairs_bounds_the_phase():
    labels = list(np.repeat(np.arange(4), 500))
    _, _, target = draw_pairs(labels, ContrastiveConfig(pairs_per_row=40, max_pairs=3000), seed=0)
    assert len(target) == 3000 and 0.4 < target.mean() < 0.6


def test_a_class_of_one_row_gets_only_pairs_with_other_classes():
    left, _, target = draw_pairs([0, 1, 1], ContrastiveConfig(pairs_per_row=2), seed=0)
    assert not ((left == 0) & (target == 1.0)).any()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.task=regression", "training.loss=mse", "training.strategy=contrastive"], "single-label"),
        (["data.task=ner", "training.loss=cross_entropy", "model.head_init=probe"], "token head"),
    ],
)
def test_the_config_refuses_a_strategy_or_head_the_task_cannot_take(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_a_long_row_keeps_its_opening_and_closing_token():
    from tasks.modelling.contrastive import shorten

    row = {"input_ids": [101, *range(1000, 1300), 102], "attention_mask": [1] * 302}
    cut = shorten(row, 128)
    assert cut["input_ids"][:3] == [101, 1000, 1001] and cut["input_ids"][-1] == 102
    assert len(cut["input_ids"]) == len(cut["attention_mask"]) == 128
    assert shorten({"input_ids": [101, 5, 102]}, 128) == {"input_ids": [101, 5, 102]}


def test_a_token_budget_draws_fewer_pairs():
    labels = list(np.repeat(np.arange(2), 100))
    _, _, target = draw_pairs(labels, ContrastiveConfig(pairs_per_row=40), seed=0, limit=900)
    assert len(target) == 800  # whole rounds of 2 pairs a row within the limit: 2 of the 20 asked
