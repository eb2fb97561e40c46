"""Multi-label classification: any number of labels per text (none is an answer too), one sigmoid per label.

The clean splits hold each row's labels as a sorted list of strings in `label`; the head has one output per
label, trained with binary cross-entropy (or a sigmoid focal loss), and each label is decided on its own
with its fitted Platt scaling and threshold (tasks.kinds.decision.Decision).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tasks.kinds.base import TaskKind
from tasks.kinds.decision import sigmoid

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tasks.kinds.decision import Decision

DEFAULT_THRESHOLD = 0.5


class MultiLabelKind(TaskKind):
    """A set of labels per row; answers list every label with its probability."""

    def references_of(self, df: pd.DataFrame, labels: Sequence[str] | None) -> list[Any]:
        """One 0/1 row per text over the label set (a label outside it is an error, named)."""
        assert labels is not None, "a multi-label model has a label set"
        return multi_hot(df["label"], labels).tolist()

    def decode(
        self, logits: list[np.ndarray], labels: list[str] | None, decision: Decision
    ) -> tuple[np.ndarray, np.ndarray]:
        """0/1 per label under each label's threshold, and sigmoid(scale * logit + bias) per label."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.multi_label stays light
        import numpy as np

        assert labels is not None, "a multi-label model has a label set"
        if not logits:
            return np.zeros((0, len(labels)), np.int64), np.zeros((0, len(labels)), np.float32)
        z = np.stack(logits).astype(np.float32)
        if decision.scales is not None and decision.biases is not None:
            z = z * np.asarray(decision.scales, dtype=np.float32) + np.asarray(decision.biases, dtype=np.float32)
        probs = sigmoid(z)
        thresholds = decision.thresholds if decision.thresholds is not None else (DEFAULT_THRESHOLD,) * len(labels)
        return (probs >= np.asarray(thresholds, dtype=np.float32)).astype(np.int64), probs

    def confidence(self, predictions: Any, probabilities: Any) -> list[float | None]:
        """How sure the least sure label decision is: min over labels of p (chosen) or 1 - p (left out)."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.multi_label stays light
        import numpy as np

        p = np.asarray(probabilities, dtype=np.float64)
        if p.size == 0:
            return [1.0] * len(p)
        sure = np.where(np.asarray(predictions) == 1, p, 1.0 - p)
        return sure.min(axis=1).astype(float).tolist()

    def answers(self, predictions: Any, labels: list[str] | None) -> list:
        """The chosen labels of each row, in label-set order (an empty list: none of them)."""
        assert labels is not None, "a multi-label model has a label set"
        return [[labels[j] for j, on in enumerate(row) if on] for row in predictions]


def multi_hot(label_sets: Sequence[Sequence[str]] | pd.Series, labels: Sequence[str]) -> np.ndarray:
    """[rows, labels] 0/1 int array from lists of label names."""
    # heavy (numpy): loaded when this runs, so importing tasks.kinds.multi_label stays light
    import numpy as np

    index = {name: j for j, name in enumerate(labels)}
    rows = list(label_sets)
    out = np.zeros((len(rows), len(labels)), dtype=np.int64)
    for i, names in enumerate(rows):
        for name in names:
            if name not in index:
                raise ValueError(f"row {i}: label '{name}' is not in the label set {list(labels)}")
            out[i, index[name]] = 1
    return out


def label_set_text(names: Sequence[str]) -> str:
    """A label set as one string: a sorted JSON list, e.g. '["billing", "refund"]'.

    Equal sets read equal (cleaning's duplicates and conflicts, the prediction log, feedback), and the collect
    stage reads it back as a list (a JSON list in a string cell).
    """
    return json.dumps(sorted(set(names)), ensure_ascii=False)


MULTI_LABEL = MultiLabelKind(
    name="multi_label",
    is_multi_label=True,
    uncapped=True,
    augments=True,
    losses=("auto", "binary_cross_entropy", "focal"),
    default_loss="binary_cross_entropy",
    primary_metric="f1_micro",
    interval_metrics=("f1_micro", "f1_macro", "subset_accuracy"),
    calibrated=True,
    has_baselines=True,
    skew_weighted=True,
    problem_type="multi_label_classification",
    intended_use="Tagging a short English text with any number of the labels above (or none of them).",
    report_unit="test rows carrying it",
)
