"""Single-label classification of a text, or of a pair of texts: one class per row, softmax over the labels."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tasks.kinds.base import TaskKind
from tasks.kinds.decision import Decision, decide, softmax

if TYPE_CHECKING:
    import numpy as np


class ClassificationKind(TaskKind):
    """One label per row from the label set; a pair kind reads two texts per row."""

    def decode(
        self, logits: list[np.ndarray], labels: list[str] | None, decision: Decision
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids under the decision rule, and softmax(logits / temperature)."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.classification stays light
        import numpy as np

        assert labels is not None, "a classifier has a label set"
        if not logits:
            return np.zeros(0, np.int64), np.zeros((0, len(labels)), np.float32)
        probs = softmax(np.stack(logits).astype(np.float32) / np.float32(decision.temperature))
        return decide(probs, decision), probs

    def confidence(self, predictions: Any, probabilities: Any) -> list[float | None]:
        """The chosen label's probability: under a threshold it need not be the largest."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.classification stays light
        import numpy as np

        assert isinstance(probabilities, np.ndarray) and isinstance(predictions, np.ndarray), "arrays for classifiers"
        return probabilities[np.arange(len(predictions)), predictions].astype(float).tolist()

    def answers(self, predictions: Any, labels: list[str] | None) -> list:
        """The label names."""
        assert labels is not None, "a classifier has a label set"
        return [labels[int(k)] for k in predictions]


CLASSIFICATION = ClassificationKind(
    name="classification",
    is_single_label=True,
    uncapped=True,
    augments=True,
    losses=("auto", "cross_entropy", "focal"),
    default_loss="cross_entropy",
    primary_metric="f1",
    interval_metrics=("f1", "accuracy"),
    calibrated=True,
    has_baselines=True,
    skew_weighted=True,
    problem_type="single_label_classification",
    intended_use="Assigning one of the labels above to a short English text like the training data.",
)

# The same head, losses, metrics and decision rule over two texts; pairs are short by nature (a character
# cap by default), and EDA augmentation would edit one text of a relation without the other.
PAIR_CLASSIFICATION = replace(
    CLASSIFICATION,
    name="pair_classification",
    reads_pairs=True,
    uncapped=False,
    augments=False,
    intended_use="Deciding the relation (one of the labels above) between two short English texts, "
    "such as whether they are paraphrases.",
)
