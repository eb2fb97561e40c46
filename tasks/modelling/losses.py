"""Training losses: cross-entropy (optionally class-weighted), focal, MSE for regression, and for
multi-label models binary cross-entropy (optionally with per-label positive weights) and sigmoid focal.

Shapes: classification logits [B, C] with labels [B]; NER logits [B, T, C] with labels
[B, T] where IGNORE_INDEX marks padding and later sub-tokens; regression logits [B] or
[B, 1] with float labels [B]; multi-label logits [B, L] with 0/1 float labels [B, L], the mean
taken over all B x L decisions (as torch's BCE-with-logits does).

Mean reductions follow torch's weighted cross-entropy convention: sum(w_i * l_i) / sum(w_i)
over the scored positions, so focal loss with gamma=0 and alpha=w is exactly
`F.cross_entropy(weight=w)`. The losses are computed in float32 even under bf16/fp16 autocast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from tasks.kinds import kind_of
from tasks.labels import IGNORE_INDEX

_REDUCTIONS = ("mean", "sum", "none")


def resolve_loss_name(task: str, loss: str) -> str:
    """Map training.loss 'auto' to cross_entropy or mse and refuse losses the task cannot use."""
    kind = kind_of(task)
    if loss not in kind.losses:
        raise ValueError(f"training.loss = '{loss}' does not fit task '{task}'; allowed: {', '.join(kind.losses)}")
    return kind.default_loss if loss == "auto" else loss


def balanced_class_weights(label_ids: Iterable[int], num_labels: int) -> list[float]:
    """sklearn's 'balanced' weights n / (k * count_c); negative ids (IGNORE_INDEX) are skipped.

    k is num_labels. A class with no examples gets 1.0: its weight never multiplies a training
    term, and a neutral value keeps it harmless in an evaluation loss.
    """
    if hasattr(label_ids, "reshape"):  # an array or tensor: skip the per-item walk
        ids = torch.as_tensor(label_ids).reshape(-1).long()
    else:
        ids = torch.as_tensor([int(i) for i in _flatten(label_ids)], dtype=torch.long)
    ids = ids[ids >= 0]
    if ids.numel() == 0:
        raise ValueError("balanced class weights need at least one labelled example")
    if int(ids.max()) >= num_labels:
        raise ValueError(f"label id {int(ids.max())} is outside the {num_labels} labels")
    counts = torch.bincount(ids, minlength=num_labels).double()
    weights = ids.numel() / (num_labels * counts)
    weights[counts == 0] = 1.0
    return weights.tolist()


# A label seen once in 2,000 rows would get a positive weight of 2,000: one example would then
# outweigh a batch. Capped, a rare label still counts 50 times a negative.
MAX_POSITIVE_WEIGHT = 50.0


def positive_weights(targets) -> list[float]:
    """Per-label positive weights for BCE: negatives / positives of each label in train, capped at 50.

    A label never seen positive gets 1.0: there is no positive term for it to weigh.
    """
    y = torch.as_tensor(targets, dtype=torch.float64)
    if y.dim() != 2 or y.shape[0] == 0:
        raise ValueError("positive weights need a [rows, labels] 0/1 matrix with at least one row")
    pos = y.sum(dim=0)
    weights = ((y.shape[0] - pos) / pos.clamp(min=1)).clamp(max=MAX_POSITIVE_WEIGHT)
    weights[pos == 0] = 1.0
    return weights.tolist()


def label_skew(targets) -> float:
    """How much rarer than its absence the rarest label seen in train is: max of negatives / positives."""
    y = torch.as_tensor(targets, dtype=torch.float64)
    if y.dim() != 2 or y.shape[0] == 0:
        return 0.0
    pos = y.sum(dim=0)
    seen = pos > 0  # a label never positive here has no positive term to weigh
    return float(((y.shape[0] - pos[seen]) / pos[seen]).max()) if bool(seen.any()) else 0.0


def multi_label_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float | None = None,
    pos_weight: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary cross-entropy per label (gamma None), or sigmoid focal loss (Lin et al., 2017) with `gamma`.

    pos_weight [L] multiplies each label's positive term. Focal: -w y (1-p)^g log p - (1-y) p^g log(1-p);
    with gamma 0 it is exactly the weighted BCE. "mean" divides by B x L, "none" gives [B, L].
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is not one of {', '.join(_REDUCTIONS)}")
    z, y = logits.float(), targets.float()
    if z.shape != y.shape:
        raise ValueError(f"multi-label logits {tuple(z.shape)} do not match the 0/1 labels {tuple(y.shape)}")
    w = _class_weight_tensor(pos_weight, z.shape[-1], z.device)
    if gamma is None:
        losses = F.binary_cross_entropy_with_logits(z, y, pos_weight=w, reduction="none")
    else:
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        log_p, log_not_p = F.logsigmoid(z), F.logsigmoid(-z)
        p = log_p.exp()
        positive = -((1.0 - p).clamp(min=0.0) ** gamma) * log_p
        negative = -(p**gamma) * log_not_p
        losses = y * positive * (w if w is not None else 1.0) + (1.0 - y) * negative
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float,
    alpha: torch.Tensor | Sequence[float] | None = None,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class focal loss -alpha_t * (1 - p_t)^gamma * log p_t (Lin et al., 2017).

    logits [..., C], targets [...]. alpha: per-class weights [C] or None (all 1). "mean"
    divides by the summed alpha of the scored positions (torch's weighted-CE convention);
    "none" returns the per-position loss with 0 at ignored positions.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction '{reduction}' is not one of {', '.join(_REDUCTIONS)}")
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    num_classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, num_classes).float()
    flat_targets = targets.reshape(-1).long()
    scored = flat_targets != ignore_index
    # Ignored positions still need a valid index for gather; their loss is masked below.
    safe_targets = torch.where(scored, flat_targets, torch.zeros_like(flat_targets))

    log_pt = F.log_softmax(flat_logits, dim=-1).gather(1, safe_targets.unsqueeze(1)).squeeze(1)
    # Rounding can push p_t a hair above 1; a negative base breaks fractional gamma.
    modulator = (1.0 - log_pt.exp()).clamp(min=0.0) ** gamma
    losses = -modulator * log_pt
    weights = _class_weight_tensor(alpha, num_classes, flat_logits.device)
    position_weights = weights[safe_targets] if weights is not None else torch.ones_like(losses)
    position_weights = position_weights * scored
    losses = losses * position_weights

    if reduction == "none":
        return losses.reshape(targets.shape)
    if reduction == "sum":
        return losses.sum()
    total_weight = position_weights.sum()
    if total_weight == 0:
        # No scored position (an all-padding batch): 0 with a graph, not torch's NaN.
        return flat_logits.sum() * 0.0
    return losses.sum() / total_weight


def compute_loss(
    task: str,
    loss_name: str,
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    gamma: float = 2.0,
    alpha: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The training loss of a batch for a task kind and training.loss (auto allowed).

    class_weights: resolved per-class weights (turn 'balanced' into numbers with
    balanced_class_weights first). For focal, alpha defaults to class_weights; giving both
    is refused because neither reading (multiply, or one wins) is obvious.
    reduction "sum" lets the caller divide by the scored items of a whole gradient-accumulation
    window (the Trainer's num_items_in_batch) instead of by this micro-batch's own count.
    label_smoothing (cross-entropy only) mixes the one-hot target with a uniform one, as torch does.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction '{reduction}' is not one of mean, sum")
    loss_name = resolve_loss_name(task, loss_name)
    if label_smoothing and loss_name != "cross_entropy":
        raise ValueError(f"training.label_smoothing applies to cross_entropy, not {loss_name}; set it to 0")
    if isinstance(class_weights, str):
        raise ValueError(
            f"training.class_weights = '{class_weights}' must be resolved to numbers first "
            "(balanced_class_weights(train_label_ids, num_labels))"
        )
    if kind_of(task).is_multi_label:
        if class_weights is not None and alpha is not None:
            raise ValueError("focal loss takes training.class_weights or training.focal_alpha as alpha, not both")
        return multi_label_loss(
            logits,
            labels,
            gamma if loss_name == "focal" else None,
            alpha if alpha is not None else class_weights,
            reduction,
        )
    if loss_name == "mse":
        if class_weights is not None or alpha is not None:
            raise ValueError("training.class_weights and training.focal_alpha apply to classification losses, not mse")
        return mse_loss(logits, labels, reduction)
    num_classes = logits.shape[-1]
    if loss_name == "cross_entropy":
        weight = _class_weight_tensor(class_weights, num_classes, logits.device)
        return F.cross_entropy(
            logits.reshape(-1, num_classes).float(),
            labels.reshape(-1).long(),
            weight=weight,
            ignore_index=IGNORE_INDEX,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    if class_weights is not None and alpha is not None:
        raise ValueError("focal loss takes training.class_weights or training.focal_alpha as alpha, not both")
    return focal_loss(logits, labels, gamma, alpha if alpha is not None else class_weights, reduction=reduction)


def mse_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Squared error (mean or sum) between a one-output regression head and float targets."""
    preds = logits.float()
    if preds.dim() > 1 and preds.shape[-1] == 1:
        preds = preds.squeeze(-1)
    if preds.shape != labels.shape:
        raise ValueError(
            f"regression logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}; "
            "the model needs num_labels=1"
        )
    return F.mse_loss(preds, labels.float(), reduction=reduction)


def _class_weight_tensor(
    weights: torch.Tensor | Sequence[float] | None, num_classes: int, device: torch.device
) -> torch.Tensor | None:
    if weights is None:
        return None
    tensor = torch.as_tensor(weights, dtype=torch.float32, device=device).reshape(-1)
    if tensor.numel() != num_classes:
        raise ValueError(f"{tensor.numel()} class weights for {num_classes} classes")
    if bool((tensor < 0).any()):
        raise ValueError("class weights must be >= 0")
    return tensor


def _flatten(values: Iterable) -> Iterable[int]:
    # NER labels come as one list per sentence; classification as a flat list or array.
    for value in values:
        if isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and value.ndim > 0):
            yield from _flatten(value)
        else:
            yield value
