"""A head that starts where a linear probe ends (`model.head_init: probe`).

A fresh head starts at random, and with a few hundred rows and a small learning rate it barely moves
before training stops. Here the head's own inputs (the pooled representation the pretrained body gives
each train row, before any update) are read once, a linear model is fitted on them with its
regularisation chosen by cross-validation (the probe baseline's fit), and its weights become the head's.
Training then starts from the probe's answers and improves on them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tasks.inference.batching import INPUT_NAMES
from tasks.kinds import kind_of
from tasks.modelling.baselines import fit_linear_cv

log = logging.getLogger(__name__)

FIT_ROWS = 4000  # enough rows to place a linear head; bounds the one forward pass on large data
FEATURE_BATCH = 64
CONSTANT_LOGIT = 4.0  # a label always (never) present in train: the head answers it with this (minus this)


def head_layer(model):
    """The head's last linear layer: the one that maps to the task's outputs (num_labels wide)."""
    import torch  # heavy (torch): loaded when training runs, so importing this module stays light

    outputs = model.config.num_labels
    found = [m for _, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == outputs]
    if not found:
        raise ValueError(
            f"model.head_init probe: no linear layer with {outputs} outputs in {type(model).__name__}; "
            "set model.head_init: random"
        )
    return found[-1]


def head_inputs(model, dataset, collator, rows: list[int]) -> np.ndarray:
    """What the head's last layer receives for each of `rows` (eval mode: no dropout), as float32."""
    import torch  # heavy (torch): loaded when training runs, so importing this module stays light

    layer, seen = head_layer(model), []
    hook = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0].detach().float().cpu()))
    keys = [k for k in INPUT_NAMES if k in dataset.column_names]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), FEATURE_BATCH):
                batch = collator([{k: dataset[i][k] for k in keys} for i in rows[start : start + FEATURE_BATCH]])
                model(**{k: v.to(device) for k, v in batch.items() if k in keys})
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(seen).numpy()


def probe_weights(task: str, x: np.ndarray, y: np.ndarray, outputs: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(weight [outputs, features], bias [outputs], the chosen regularisation) of a linear probe on x."""
    kind = kind_of(task)
    fitted, chosen = fit_linear_cv(task, x, y)
    weight = np.zeros((outputs, x.shape[1]), dtype=np.float32)
    bias = np.zeros(outputs, dtype=np.float32)
    if kind.predicts_value:
        weight[0], bias[0] = np.ravel(fitted.coef_), float(np.ravel([fitted.intercept_])[0])
    elif kind.is_multi_label:
        for j, est in enumerate(fitted.estimators_):
            if hasattr(est, "coef_"):
                weight[j], bias[j] = est.coef_[0], est.intercept_[0]
            else:  # sklearn's stand-in for a label constant in train
                bias[j] = CONSTANT_LOGIT if float(np.ravel(est.y_)[0]) else -CONSTANT_LOGIT
    else:
        present = fitted.classes_
        if len(present) == 2 and outputs == 2 and fitted.coef_.shape[0] == 1:
            # One log-odds vector for two classes: softmax over (-z/2, z/2) gives the same odds.
            weight[present[1]], bias[present[1]] = fitted.coef_[0] / 2, fitted.intercept_[0] / 2
            weight[present[0]], bias[present[0]] = -fitted.coef_[0] / 2, -fitted.intercept_[0] / 2
        else:
            weight[present], bias[present] = fitted.coef_, fitted.intercept_
            bias[np.setdiff1d(np.arange(outputs), present)] = -CONSTANT_LOGIT  # a class absent from train
    return weight, bias, chosen


def init_head_from_probe(model, dataset, collator, task: str, seed: int) -> dict[str, Any]:
    """Fit a linear probe on the head's inputs over train and copy its weights into the head; the record."""
    import torch  # heavy (torch): loaded when training runs, so importing this module stays light

    kind = kind_of(task)
    if kind.is_token_level:
        raise ValueError("model.head_init probe: a token head (ner) has no single input per text; use random")
    rng = np.random.default_rng(seed)
    rows = sorted(rng.permutation(len(dataset))[:FIT_ROWS].tolist())
    x = head_inputs(model, dataset, collator, rows)
    labels = dataset[rows]["labels"]
    y = np.asarray(labels, dtype=np.float32 if kind.predicts_value else np.int64)
    if kind.is_single_label and len(np.unique(y)) < 2:
        return {"head_init": "random", "why": "train holds one class"}
    weight, bias, chosen = probe_weights(task, x, y, model.config.num_labels)
    layer = head_layer(model)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight).to(layer.weight))
        layer.bias.copy_(torch.from_numpy(bias).to(layer.bias))
    record = {"head_init": "probe", "rows": len(rows), **chosen}
    log.info("head: started from a linear probe on %d train rows (%s)", len(rows), chosen)
    return record
