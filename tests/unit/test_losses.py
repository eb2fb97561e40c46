"""Losses checked against hand-computed values and torch's own cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from tasks.modelling.losses import balanced_class_weights, compute_loss, focal_loss, resolve_loss_name


def softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_focal_loss_matches_hand_computation():
    rows = [[1.0, 2.0, 0.5], [0.2, -1.0, 0.3]]
    targets = [1, 0]
    alpha = [0.25, 0.5, 0.25]
    gamma = 2.0
    terms, weights = [], []
    for row, t in zip(rows, targets):
        p_t = softmax(row)[t]
        terms.append(-alpha[t] * (1 - p_t) ** gamma * math.log(p_t))
        weights.append(alpha[t])
    expected_mean = sum(terms) / sum(weights)

    logits, target_tensor = torch.tensor(rows), torch.tensor(targets)
    assert focal_loss(logits, target_tensor, gamma, alpha).item() == pytest.approx(expected_mean, rel=1e-6)
    summed = focal_loss(logits, target_tensor, gamma, alpha, reduction="sum")
    assert summed.item() == pytest.approx(sum(terms), rel=1e-6)
    per_item = focal_loss(logits, target_tensor, gamma, torch.tensor(alpha), reduction="none")
    assert per_item.tolist() == pytest.approx(terms, rel=1e-6)


def test_focal_without_alpha_averages_over_examples():
    rows, targets = [[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]], [2, 0]
    terms = [-((1 - softmax(r)[t]) ** 0.5) * math.log(softmax(r)[t]) for r, t in zip(rows, targets)]
    got = focal_loss(torch.tensor(rows), torch.tensor(targets), gamma=0.5)
    assert got.item() == pytest.approx(sum(terms) / 2, rel=1e-6)


def test_focal_gamma_zero_equals_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 4)  # NER shape [B, T, C]
    labels = torch.randint(0, 4, (3, 5))
    labels[0, 0] = labels[2, 4] = -100
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0])
    expected = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), weight=weight, ignore_index=-100)
    assert torch.allclose(focal_loss(logits, labels, gamma=0.0, alpha=weight), expected, atol=1e-6)
    via_compute = compute_loss("ner", "focal", logits, labels, class_weights=weight.tolist(), gamma=0.0)
    assert torch.allclose(via_compute, expected, atol=1e-6)


def test_ignored_positions_neither_count_nor_receive_gradient():
    logits = torch.tensor([[1.0, 0.0, -1.0], [5.0, -5.0, 0.0], [0.3, 0.3, 0.4]], requires_grad=True)
    labels = torch.tensor([0, -100, 2])
    loss = focal_loss(logits, labels, gamma=2.0)
    kept = focal_loss(logits.detach()[[0, 2]], labels[[0, 2]], gamma=2.0)
    assert loss.item() == pytest.approx(kept.item(), rel=1e-6)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0
    assert focal_loss(logits, labels, gamma=2.0, reduction="none")[1].item() == 0.0


def test_all_ignored_batch_gives_zero_not_nan():
    logits = torch.randn(2, 3, requires_grad=True)
    loss = focal_loss(logits, torch.tensor([-100, -100]), gamma=2.0)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_compute_loss_cross_entropy_and_mse():
    torch.manual_seed(1)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    weights = [1.0, 2.0, 0.5]
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(weights))
    assert torch.allclose(compute_loss("classification", "auto", logits, labels, class_weights=weights), expected)

    preds, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 3.0])
    assert compute_loss("regression", "auto", preds, targets).item() == pytest.approx((0.25 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="class_weights"):
        compute_loss("regression", "mse", preds, targets, class_weights=[1.0])


def test_compute_loss_refuses_unclear_weights():
    logits, labels = torch.randn(2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="not both"):
        compute_loss("classification", "focal", logits, labels, class_weights=[1.0, 2.0], alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match="balanced_class_weights"):
        compute_loss("classification", "cross_entropy", logits, labels, class_weights="balanced")
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        compute_loss("classification", "cross_entropy", logits, labels, class_weights=[1.0, 1.0, 1.0])


def test_resolve_loss_name():
    assert resolve_loss_name("classification", "auto") == "cross_entropy"
    assert resolve_loss_name("ner", "auto") == "cross_entropy"
    assert resolve_loss_name("regression", "auto") == "mse"
    assert resolve_loss_name("pair_classification", "focal") == "focal"
    with pytest.raises(ValueError, match=r"training\.loss = 'cross_entropy'.*allowed: auto, mse"):
        resolve_loss_name("regression", "cross_entropy")
    with pytest.raises(ValueError, match=r"training\.loss = 'focal'.*allowed: auto, mse"):
        resolve_loss_name("regression", "focal")
    with pytest.raises(ValueError, match=r"training\.loss = 'mse'.*allowed: auto, cross_entropy, focal"):
        resolve_loss_name("classification", "mse")
    with pytest.raises(ValueError, match="unknown task"):
        resolve_loss_name("summarisation", "auto")


def test_balanced_class_weights_match_sklearn():
    labels = [0, 0, 0, 0, 1, 1, 2]
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(labels))
    assert balanced_class_weights(labels, 3) == pytest.approx(list(expected))
    assert balanced_class_weights(torch.tensor(labels), 3) == pytest.approx(list(expected))


def test_balanced_class_weights_for_ner_skip_ignored_and_absent_classes():
    sentences = [[-100, 0, 0, 1, -100], [0, 1, -100]]  # 5 scored tokens, class 2 never seen
    assert balanced_class_weights(sentences, 3) == pytest.approx([5 / (3 * 3), 5 / (3 * 2), 1.0])
    with pytest.raises(ValueError, match="outside"):
        balanced_class_weights([0, 3], 3)


def test_label_smoothing_matches_hand_computation():
    row, target, eps = [2.0, -1.0, 0.5], 0, 0.1
    log_p = [math.log(p) for p in softmax(row)]
    # (1 - eps) on the true class plus eps spread evenly over all three classes.
    expected = -((1 - eps) * log_p[target] + eps * sum(log_p) / 3)
    got = compute_loss(
        "classification", "cross_entropy", torch.tensor([row]), torch.tensor([target]), label_smoothing=eps
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() > compute_loss("classification", "auto", torch.tensor([row]), torch.tensor([target])).item()
    with pytest.raises(ValueError, match="label_smoothing applies to cross_entropy, not focal"):
        compute_loss("classification", "focal", torch.tensor([row]), torch.tensor([target]), label_smoothing=eps)
