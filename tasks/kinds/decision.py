"""How class logits become an answer: softmax with a temperature, and an optional decision threshold.

Numpy is imported inside the functions: the kinds, and the config models that ask them, import cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Decision:
    """How class logits become an answer: probabilities = softmax(logits / temperature); for binary
    classifiers with a threshold, the answer is the `positive` class when its probability >= threshold.

    Multi-label models decide each label on its own: probability = sigmoid(scales[j] * logit + biases[j])
    (Platt scaling per label), the label is in the answer when it is >= thresholds[j] (0.5 for every label
    when none are recorded).
    """

    temperature: float = 1.0
    threshold: float | None = None
    positive: int | None = None
    scales: tuple[float, ...] | None = None
    biases: tuple[float, ...] | None = None
    thresholds: tuple[float, ...] | None = None

    @classmethod
    def of_meta(cls, meta: dict) -> Decision:
        """The rule a model folder's or bundle's finetune_flow.json records (none recorded: plain softmax, argmax)."""
        d = meta.get("decision") or {}
        label = d.get("positive_label")
        per_label = {
            key: tuple(float(v) for v in d[key]) for key in ("scales", "biases", "thresholds") if d.get(key) is not None
        }
        return cls(
            float(d.get("temperature", 1.0)),
            d.get("threshold"),
            meta["labels"].index(label) if label is not None else None,
            **per_label,
        )


PLAIN = Decision()


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (shifted by the max, so large logits do not overflow)."""
    # heavy (numpy): loaded when this runs, so importing tasks.kinds.decision stays light
    import numpy as np

    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow warnings for large negative logits."""
    # heavy (numpy): loaded when this runs, so importing tasks.kinds.decision stays light
    import numpy as np

    x = np.asarray(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def decide(probs: np.ndarray, decision: Decision) -> np.ndarray:
    """Class ids from calibrated probabilities: the positive class at or above the threshold, else argmax."""
    # heavy (numpy): loaded when this runs, so importing tasks.kinds.decision stays light
    import numpy as np

    if decision.threshold is None:
        return probs.argmax(-1).astype(np.int64)
    assert decision.positive is not None, "a threshold is recorded with its positive class"
    return np.where(probs[:, decision.positive] >= decision.threshold, decision.positive, 1 - decision.positive).astype(
        np.int64
    )
