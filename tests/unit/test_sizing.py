"""Defaults that fit the data (tasks/modelling/sizing.py): the update floor's arithmetic and max_length auto.

Update counts are checked against the Trainer's own formula written out by hand; lengths against the
packaged MiniLM tokenizer (real, offline).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tasks.config import ConfigError, load_config
from tasks.modelling.sizing import (
    AUTO_PATIENCE,
    choose_max_length,
    choose_strategy,
    pair_shares,
    plan_schedule,
    resolve_max_length,
    updates_per_epoch,
    with_recorded_length,
    with_schedule,
    with_strategy,
)


def training(*overrides: str):
    return load_config(None, list(overrides)).training


def trainer_updates_per_epoch(rows: int, batch: int, accumulation: int, world: int) -> int:
    """transformers' Trainer: len(dataloader) // ga + (remainder > 0), at least 1; each rank reads ceil(rows / world)."""
    len_dataloader = math.ceil(math.ceil(rows / world) / batch)
    return max(len_dataloader // accumulation + int(len_dataloader % accumulation > 0), 1)


@pytest.mark.parametrize(
    "rows,batch,accumulation,world",
    [(1, 32, 1, 1), (80, 32, 1, 1), (96, 32, 1, 1), (10_240, 32, 1, 1), (387, 16, 3, 1), (1001, 8, 2, 2)],
)
def test_updates_per_epoch_counts_as_the_trainer_does(rows, batch, accumulation, world):
    assert updates_per_epoch(rows, batch, accumulation, world) == trainer_updates_per_epoch(
        rows, batch, accumulation, world
    )


def test_a_large_train_split_keeps_its_schedule_exactly():
    # The quickstart: 10.2k train rows, batch 32, 2 epochs = 640 updates, evaluated per epoch.
    tc = training("training.epochs=2")
    s = plan_schedule(tc, 10_240)
    assert (s.updates, s.epochs, s.raised, s.eval_steps, s.early_stopping_patience) == (640, 2.0, False, None, None)
    assert with_schedule(load_config(None, ["training.epochs=2"]), s).training == tc


def test_a_small_train_split_trains_to_the_floor_evaluates_often_and_stops_early():
    tc = training()  # 3 epochs, batch 32, min_updates 300, evaluations_auto 10
    assert tc.min_updates == 300 and tc.epochs == 3.0
    s = plan_schedule(tc, 387)  # the 7-intent set's ~387 train rows: 13 updates per epoch, 39 in 3 epochs
    assert s.updates_per_epoch == 13 and s.raised and not s.capped
    assert s.epochs == 24.0 and s.updates == 312 >= 300  # whole epochs: the floor is met, not overshot by one
    assert s.eval_steps == math.ceil(312 / 10) and s.early_stopping_patience == AUTO_PATIENCE
    cfg = with_schedule(load_config(None, []), s)
    assert (cfg.training.epochs, cfg.training.eval_steps, cfg.training.early_stopping_patience) == (24.0, 32, 3)


def test_a_tiny_train_split_stops_at_max_epochs_auto():
    s = plan_schedule(training(), 40)  # 2 updates per epoch: 150 epochs would be needed
    assert s.raised and s.capped and s.epochs == 50.0 and s.updates == 100 and s.eval_steps == 10
    assert plan_schedule(training("training.epochs=80"), 40).epochs == 80.0  # the cap never lowers the epochs


def test_values_the_user_set_win():
    s = plan_schedule(training("training.eval_steps=7", "training.early_stopping_patience=1"), 100)
    assert s.raised and s.eval_steps == 7 and s.early_stopping_patience == 1
    for off in ("training.min_updates=0", "training.max_steps=20"):
        s = plan_schedule(training(off), 100)
        assert not s.raised and s.epochs == 3.0 and s.eval_steps is None and s.early_stopping_patience is None
    assert plan_schedule(training("training.max_steps=20"), 100).updates == 20
    # A search trial saves no checkpoint to go back to: no automatic early stop.
    assert plan_schedule(training(), 100, checkpoints=False).early_stopping_patience is None
    # Gradient accumulation and data-parallel ranks count: fewer updates per epoch, more epochs.
    assert plan_schedule(training(), 1000, world_size=2).updates_per_epoch == 16
    assert plan_schedule(training("training.gradient_accumulation_steps=4"), 1000).updates_per_epoch == 8


def test_choose_max_length_rounds_the_98th_percentile_within_bounds():
    assert choose_max_length([10] * 100, 512) == 32  # at least 32
    assert choose_max_length(list(range(1, 101)), 512) == 104  # p98 = 98, rounded up to a multiple of 8
    assert choose_max_length([40] * 98 + [900, 900], 512) == 40  # the longest 2% do not set the length
    assert choose_max_length([40] * 97 + [900] * 3, 512) == 512  # capped by 512
    assert choose_max_length([300] * 10, 128) == 128  # and by the model's positions
    assert choose_max_length([300] * 10, None) == 304  # relative positions: 512 is the only cap
    assert choose_max_length([20] * 10, 512, stride=40) == 80  # chunk windows share at most half their tokens
    with pytest.raises(ValueError, match="model.stride = 100.*at most 64"):
        choose_max_length([20] * 10, 128, stride=100)


def test_max_length_accepts_auto_or_a_number():
    assert load_config(None, []).model.max_length == "auto"  # the default
    assert load_config(None, ["model.max_length=64"]).model.max_length == 64
    assert load_config(None, ["model.max_length=auto", "model.stride=40"]).model.max_length == "auto"
    for bad in ("model.max_length=longest", "model.max_length=4"):
        with pytest.raises(ConfigError, match="max_length"):
            load_config(None, [bad])
    with pytest.raises(ValueError, match="resolve it first"):
        load_config(None, []).model.window_stride()
    cfg = with_recorded_length(load_config(None, []), {"max_length": 72})
    assert cfg.model.max_length == 72 and cfg.model.window_stride() == 18


@pytest.fixture(scope="module")
def tokenizer():
    from tasks.modelling.encode import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path("minilm"))


def test_auto_length_reads_the_train_split_and_says_what_it_cuts(tokenizer, caplog):
    short = [f"question number {i} about the weather" for i in range(90)]
    long = [" ".join(["word"] * 200)] * 10  # 202 tokens with [CLS] and [SEP]
    train = pd.DataFrame({"text": short + long, "label": ["a"] * 100})
    lengths = [len(ids) for ids in tokenizer(short + long)["input_ids"]]
    cfg = load_config(None, [])
    with caplog.at_level("INFO", logger="tasks.modelling.sizing"):
        resolved, record = resolve_max_length(cfg, tokenizer, train, 512)
    assert resolved.model.max_length == record["max_length"] == choose_max_length(lengths, 512) == 208
    assert record["train_texts_longer"] == 0 and "advice" not in record
    assert "model.max_length auto: 208 tokens; 0 of 100 train texts" in caplog.text
    # A number stays, and the record counts what it cuts: 10% long texts is not yet "many".
    resolved, record = resolve_max_length(load_config(None, ["model.max_length=32"]), tokenizer, train, 512)
    assert resolved.model.max_length == 32 and record["train_texts_longer"] == 10 and "advice" not in record


def test_many_texts_past_the_length_get_plain_advice(tokenizer):
    texts = [" ".join(["word"] * 700)] * 3 + ["short text"] * 7
    train = pd.DataFrame({"text": texts, "label": ["a"] * 10})
    resolved, record = resolve_max_length(load_config(None, []), tokenizer, train, 512)
    assert resolved.model.max_length == 512 and record["train_texts_longer"] == 3
    assert "model.long_text: chunk would read them whole" in record["advice"]
    assert "keeps model.long_text: truncate" in record["advice"]
    chunked = load_config(None, ["model.long_text=chunk"])
    assert "advice" not in resolve_max_length(chunked, tokenizer, train, 512)[1]  # already read whole


def test_pairs_are_cut_from_the_longer_side_first(tokenizer):
    pairs = pd.DataFrame(
        {"text": ["a short first text", "two short texts"], "text_pair": [" ".join(["word"] * 100), "both fit"]}
    )
    shares = pair_shares(tokenizer, pairs, 32)
    text_tokens = len(tokenizer("a short first text", add_special_tokens=False)["input_ids"])
    # longest_first: the 100-token text_pair gives up tokens; the short text is read whole.
    assert shares["pairs_cut"] == 1 and shares["text_kept"] == 1.0
    assert shares["text_pair_kept"] == pytest.approx((32 - 3 - text_tokens) / 100)
    assert pair_shares(tokenizer, pairs, 512) == {"pairs_cut": 0, "text_kept": 1.0, "text_pair_kept": 1.0}
    # The encoder training uses truncates the same way (truncation=True is longest_first).
    from tasks.modelling.encode import encode_texts

    enc = encode_texts(tokenizer, list(pairs["text"]), list(pairs["text_pair"]), 32)
    assert (
        len(enc["input_ids"][0]) == 32
        and enc["input_ids"][0][: text_tokens + 1] == (tokenizer("a short first text")["input_ids"][:-1])
    )


def test_the_choices_become_readable_run_tags():
    from tasks.modelling.sizing import resolved_tags, schedule_record

    tc = training()
    record = {
        "max_length": {
            "max_length": 56,
            "max_length_from": "auto (p98 of train token lengths)",
            "train_texts_longer": 1,
            "train_texts_measured": 66,
        },
        "schedule": schedule_record(plan_schedule(tc, 96), tc),
    }
    tags = resolved_tags(record)
    assert tags["resolved.max_length"] == "56 (auto (p98 of train token lengths))"
    assert tags["resolved.epochs"] == "50 (raised by training.min_updates)" and tags["resolved.updates"] == "150"
    assert tags["resolved.early_stopping_patience"] == "3" and tags["resolved.eval_steps"] == "15"


@pytest.mark.parametrize(
    ("counts", "overrides", "chosen"),
    [
        ({"a": 8, "b": 8, "c": 8}, [], "contrastive"),  # few rows a class: pairs
        ({"a": 64, "b": 64, "c": 1000}, [], "contrastive"),  # the median class decides, not the largest
        ({"a": 65, "b": 500}, [], "fine_tune"),  # past the limit: plain fine-tuning
        ({"a": 8, "b": 8}, ["training.contrastive.auto_rows_per_class=4"], "fine_tune"),
        ({"a": 8}, [], "fine_tune"),  # one class: no negative pairs
        ({"a": 500, "b": 500}, ["training.strategy=contrastive"], "contrastive"),  # the config wins
    ],
)
def test_strategy_auto_takes_contrastive_for_few_rows_per_class(counts, overrides, chosen):
    cfg = load_config(None, overrides)
    train = pd.DataFrame({"text": "t", "label": [k for k, n in counts.items() for _ in range(n)]})
    record = choose_strategy(cfg, train, say=False)
    assert record["strategy"] == chosen
    assert with_strategy(cfg, chosen).training.strategy == chosen


def test_strategy_auto_fine_tunes_kinds_without_single_label_classes():
    cfg = load_config(None, ["data.task=regression", "training.loss=mse"])
    train = pd.DataFrame({"text": "t", "label": [0.5] * 10})
    assert choose_strategy(cfg, train, say=False)["strategy"] == "fine_tune"


def test_the_token_budget_stops_the_raised_epochs_never_below_the_configured_ones():
    tc = training()  # 300 updates floor, batch 32
    long_docs = plan_schedule(tc, 119, row_tokens=512, budget=1_000_000)  # 4 updates an epoch at 512 tokens
    assert long_docs.raised and long_docs.budget_capped and long_docs.capped
    assert long_docs.epochs == 16.0  # 1M / (119 x 512) = 16.4 passes
    assert long_docs.updates == 16 * long_docs.updates_per_epoch
    short = plan_schedule(tc, 119, row_tokens=20, budget=1_000_000)  # the same rows, short: the budget is far
    assert not short.budget_capped and short.epochs == 50.0
    assert plan_schedule(tc, 119, row_tokens=512, budget=10_000).epochs == tc.epochs  # never below the config
    assert not plan_schedule(tc, 119, row_tokens=512, budget=None).budget_capped


def test_the_token_budget_follows_the_device_unless_set():
    from tasks.modelling.sizing import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET, token_budget

    assert token_budget(training(), on_gpu=False) == CPU_TOKEN_BUDGET
    assert token_budget(training(), on_gpu=True) == GPU_TOKEN_BUDGET
    assert token_budget(training("training.auto_token_budget=5000"), on_gpu=True) == 5000


def test_the_contrastive_time_budget_follows_the_device_unless_set():
    from tasks.modelling.sizing import CPU_CONTRASTIVE_SECONDS, contrastive_seconds

    assert contrastive_seconds(training(), on_gpu=False) == CPU_CONTRASTIVE_SECONDS
    assert contrastive_seconds(training(), on_gpu=True) is None
    assert contrastive_seconds(training("training.contrastive.max_seconds=90"), on_gpu=True) == 90
    assert contrastive_seconds(training("training.contrastive.max_seconds=null"), on_gpu=False) is None
