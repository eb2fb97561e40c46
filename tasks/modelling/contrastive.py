"""The first phase of `training.strategy: contrastive`: the body learns the classes from pairs (SetFit-style).

With a handful of rows per class, a new head and the body trained together on a few dozen updates
move little. Pairs multiply the signal: each train row is paired with rows of its class (target
cosine 1) and of other classes (target 0), and the body learns to place them so (the cosine-similarity
loss of SetFit, Tunstall et al. 2022). The representation trained is the one the head reads (the input
of its last layer), so the same sequence-classification model is exported and served: no second
model kind. The head then starts from a linear probe on the tuned body (tasks/modelling/head_init.py).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from tasks.config.training import ContrastiveConfig
from tasks.inference.batching import INPUT_NAMES
from tasks.modelling.head_init import head_layer
from tasks.progress import counted_calls

log = logging.getLogger(__name__)
PACE_UPDATES = 5  # updates timed (after the first) before a time budget decides how many fit


def draw_pairs(
    labels: list[int], cfg: ContrastiveConfig, seed: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left rows, right rows, target cosine): for each row, as often as pairs_per_row allows, one pair with
    a row of its class (1.0) and one with a row of another class (0.0), shuffled, at most max_pairs (and
    at most `limit`)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    most = max(2, min(cfg.max_pairs, limit or cfg.max_pairs))
    rounds = max(1, min(cfg.pairs_per_row // 2, most // (2 * len(y))))  # whole rounds: every row as often
    pairs: list[tuple[int, int, float]] = []
    for _ in range(rounds):
        for i, c in enumerate(y):
            same, others = by_class[c], np.flatnonzero(y != c)
            if len(same) > 1:
                j = i
                while j == i:
                    j = int(rng.choice(same))
                pairs.append((i, j, 1.0))
            if len(others):
                pairs.append((i, int(rng.choice(others)), 0.0))
    order = rng.permutation(len(pairs))[:most]
    drawn = np.asarray(pairs, dtype=np.float64).reshape(-1, 3)[order]
    return drawn[:, 0].astype(np.int64), drawn[:, 1].astype(np.int64), drawn[:, 2].astype(np.float32)


def tune_body_contrastively(
    model,
    dataset,
    collator,
    cfg: ContrastiveConfig,
    seed: int,
    budget: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train the body on label pairs (cosine loss on the head's input); return what the phase did.

    budget: the most tokens the phase reads (training.auto_token_budget); fewer pairs when they would pass it.
    max_seconds: the phase's time budget; after PACE_UPDATES updates their pace sets how many updates fit.
    """
    import torch  # heavy (torch): loaded when training runs, so importing this module stays light

    started = time.monotonic()
    torch.manual_seed(seed)
    keys = [k for k in INPUT_NAMES if k in dataset.column_names]
    rows = [shorten({k: dataset[i][k] for k in keys}, cfg.max_length) for i in range(len(dataset))]
    pair_tokens = 2 * sum(len(r["input_ids"]) for r in rows) / max(len(rows), 1)
    limit = int(budget // pair_tokens) if budget else None
    left, right, target = draw_pairs(list(dataset["labels"]), cfg, seed, limit)
    if not (target == 1.0).any() or not (target == 0.0).any():
        return {"strategy": "contrastive", "pairs": 0, "why": "train needs two classes and a class with two rows"}
    layer, seen = head_layer(model), []
    hook = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    device = next(model.parameters()).device
    steps = planned = math.ceil(len(target) / cfg.batch_size)
    warmup = max(1, steps // 10)
    head = {id(p) for p in layer.parameters()}  # not trained here: the probe places it afterwards
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    optimizer = torch.optim.AdamW(body, lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )

    def embed(idx: np.ndarray):
        seen.clear()
        batch = collator([rows[i] for i in idx])
        model(**{k: v.to(device) for k, v in batch.items() if k in keys})
        return seen[-1]

    def update(s: int) -> None:
        part = slice(s * cfg.batch_size, (s + 1) * cfg.batch_size)
        u, v = embed(left[part]), embed(right[part])
        cos = torch.nn.functional.cosine_similarity(u, v, dim=-1)
        loss = torch.nn.functional.mse_loss(cos, torch.from_numpy(target[part]).to(cos))
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    model.train()
    losses: list[float] = []
    paced_from = None
    try:
        with counted_calls(update, steps, "contrastive phase", log) as counted:
            s = 0
            while s < steps:
                if s == 1:  # the first update pays for allocation and warm-up: the pace is read after it
                    paced_from = time.monotonic()
                counted(s)
                s += 1
                if max_seconds and paced_from is not None and s == 1 + PACE_UPDATES:
                    pace = (time.monotonic() - paced_from) / PACE_UPDATES
                    fits = max(s, int((max_seconds - (time.monotonic() - started)) / pace) + s)
                    if fits < steps:
                        log.info(
                            "contrastive phase: %.1f s an update here, so %d of %d updates fit in "
                            "training.contrastive.max_seconds %d",
                            pace,
                            fits,
                            steps,
                            max_seconds,
                        )
                        steps = fits
    finally:
        hook.remove()
    tenth = max(1, len(losses) // 10)
    record = {
        "strategy": "contrastive",
        "pairs": min(len(target), steps * cfg.batch_size),
        "updates": steps,
        "time_capped": steps < planned,
        "budget_capped": bool(limit is not None and limit < min(cfg.max_pairs, cfg.pairs_per_row * len(rows))),
        "loss_first_tenth": round(float(np.mean(losses[:tenth])), 4),
        "loss_last_tenth": round(float(np.mean(losses[-tenth:])), 4),
        "seconds": round(time.monotonic() - started, 1),
    }
    log.info(
        "contrastive phase: %d label pairs%s%s, %d updates, cosine loss %.3f -> %.3f, %.0f s",
        record["pairs"],
        f" (fewer: training.auto_token_budget {budget:,} tokens)" if record["budget_capped"] else "",
        f" (fewer: training.contrastive.max_seconds {max_seconds})" if record["time_capped"] else "",
        steps,
        record["loss_first_tenth"],
        record["loss_last_tenth"],
        record["seconds"],
    )
    return record


def shorten(row: dict[str, list[int]], max_length: int) -> dict[str, list[int]]:
    """The row's first max_length - 1 tokens and its closing token ([SEP]), as truncation would have cut it."""
    if len(row["input_ids"]) <= max_length:
        return row
    return {k: [*v[: max_length - 1], v[-1]] for k, v in row.items()}
