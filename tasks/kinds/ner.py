"""Named-entity recognition: one BIO tag per word, decoded into entity spans by the service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.kinds.base import TaskKind
from tasks.kinds.decision import softmax

if TYPE_CHECKING:
    import numpy as np

    from tasks.kinds.decision import Decision


class NerKind(TaskKind):
    """A tag per word from the tag set ("O", B-/I- per entity type)."""

    def decode(
        self, logits: list[np.ndarray], labels: list[str] | None, decision: Decision
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """Each word's most probable tag and its [words, tags] probabilities (the decision rule does not apply)."""
        # heavy (numpy): loaded when this runs, so importing tasks.kinds.ner stays light
        import numpy as np

        assert labels is not None, "NER has a tag set"
        word_probs = [softmax(np.asarray(row, dtype=np.float32)) for row in logits]
        return [[labels[int(k)] for k in p.argmax(-1)] for p in word_probs], word_probs

    def confidence(self, predictions: Any, probabilities: Any) -> list[float | None]:
        """The top probability's mean over the words (1.0 without words)."""
        return [float(p.max(-1).mean()) if len(p) else 1.0 for p in probabilities]

    def answers(self, predictions: Any, labels: list[str] | None) -> list:
        """The word tags."""
        return list(predictions)


NER = NerKind(
    name="ner",
    is_token_level=True,
    losses=("auto", "cross_entropy", "focal"),
    default_loss="cross_entropy",
    primary_metric="f1",
    interval_metrics=("f1",),
    intended_use="Tagging entity mentions (the types above) in short English texts like the training data, "
    "word by word, with BIO tags.",
    target_noun="Entity types",
    report_unit="test mentions",
)
