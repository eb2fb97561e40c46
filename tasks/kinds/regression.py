"""Regression: one number per text (or text pair), trained with mean squared error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.kinds.base import TaskKind

if TYPE_CHECKING:
    import numpy as np

    from tasks.kinds.decision import Decision


class RegressionKind(TaskKind):
    """A value per row; no label set, no probabilities, no calibration."""

    def decode(self, logits: list[np.ndarray], labels: list[str] | None, decision: Decision) -> tuple[np.ndarray, None]:
        """The head's single output per row (the decision rule does not apply)."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.regression stays light
        import numpy as np

        return np.array([float(np.ravel(row)[0]) for row in logits], dtype=np.float64), None

    def confidence(self, predictions: Any, probabilities: Any) -> list[float | None]:
        """None per row: a value has no probability."""
        return [None] * len(predictions)

    def answers(self, predictions: Any, labels: list[str] | None) -> list:
        """The values as floats."""
        return [float(v) for v in predictions]


REGRESSION = RegressionKind(
    name="regression",
    predicts_value=True,
    uncapped=True,
    augments=True,
    losses=("auto", "mse"),
    default_loss="mse",
    primary_metric="pearson",
    interval_metrics=("pearson",),
    has_baselines=True,
    problem_type="regression",
    intended_use="Scoring a short English text on the training data's numeric scale.",
    target_noun="Target",
)
