"""Decoding logits into answers for every task kind: labels and probabilities, values, word tags, entities.

The PyTorch scorer of evaluation decodes with these same functions, so both backends read logits alike.
A model's decision rule (its fitted temperature and, for binary classifiers, its chosen threshold)
travels in the bundle meta and is applied here, so every scorer answers with the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.kinds import TaskKind, kind_of
from tasks.kinds.decision import PLAIN, Decision, decide, softmax
from tasks.labels import INSIDE, entity_type, opens_entity

__all__ = [
    "PLAIN",
    "Decision",
    "Scores",
    "decide",
    "decode_logits",
    "describe_rule",
    "entities_of",
    "softmax",
    "word_logits",
]


def describe_rule(record: dict) -> str:
    """How the threshold of a decision record (the meta's "decision") was set, in words, for the model card and /model."""
    rule = record.get("rule")
    per_label = record.get("thresholds") is not None
    if rule is None:
        return "each label's best F1 on validation" if per_label else "none (the most probable label)"
    if isinstance(rule, float):
        return f"fixed at {rule}" + (" for every label" if per_label else "")
    if "max_f1" in rule:
        return f"the best F1 of '{rule['max_f1']}' on validation"
    which = f"'{rule['label']}'" if rule.get("label") else "each label"
    return f"the most recall at precision >= {rule['min_precision']} of {which} on validation"


@dataclass(frozen=True)
class Scores:
    """A batch's answers in input order, as arrays: what gates compare and batch scorers write.

    predictions: class ids (int array) for classification; values (float array) for regression;
        one list of BIO tags per row (one tag per word) for NER.
    probabilities: [rows, labels] float array; NER: one [words, labels] array per row; None for regression.
    truncated: per row, whether the input was cut at max_length (None when the scorer does not know).
    """

    task: str
    labels: list[str] | None
    predictions: np.ndarray | list[list[str]]
    probabilities: np.ndarray | list[np.ndarray] | None
    truncated: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.predictions)

    @property
    def kind(self) -> TaskKind:
        """The task kind whose answers these are."""
        return kind_of(self.task)

    def confidence(self) -> list[float | None]:
        """Per row: the top probability; NER: its mean over the words (1.0 without words); None for regression."""
        return self.kind.confidence(self.predictions, self.probabilities)

    def answers(self) -> list:
        """Per row: the label name, the value, or the word tags (the form a person reads)."""
        return self.kind.answers(self.predictions, self.labels)


def word_logits(token_logits: np.ndarray, word_ids: list, n_words: int, outside: int = 0) -> np.ndarray:
    """Each word's logits are its first sub-token's; a word cut off by truncation gets a row picking `outside` ("O")."""
    words = np.zeros((n_words, token_logits.shape[-1]), dtype=np.float32)
    seen = set()
    for t, wid in enumerate(word_ids):
        if wid is not None and wid not in seen:
            seen.add(wid)
            words[wid] = token_logits[t]
    if len(seen) < n_words:
        words[sorted(set(range(n_words)) - seen), outside] = 1.0
    return words


def decode_logits(task: str, logits: list[np.ndarray], labels: list[str] | None, decision: Decision = PLAIN) -> Scores:
    """Scores from logits per row: [labels] per text, [1] per regression text, [words, labels] per NER row.

    decision: the temperature and threshold of classification models (NER and regression ignore it).
    """
    predictions, probabilities = kind_of(task).decode(logits, labels, decision)
    return Scores(task, labels, predictions, probabilities)


def entities_of(text: str, spans: list[tuple[int, int]], tags: list[str], probs: np.ndarray) -> list[dict]:
    """Entities with character spans of whole words, from one BIO tag per word; score = mean word probability."""
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for (start, end), tag, p in zip(spans, tags, probs):
        score = float(p.max())
        if opens_entity(tag, current["type"] if current else None):
            current = {"type": entity_type(tag), "start": start, "end": end, "scores": [score]}
            entities.append(current)
        elif tag.startswith(INSIDE):
            assert current is not None, "an I- tag that opens no entity continues the current one"
            current["end"] = end
            current["scores"].append(score)
        else:
            current = None
    for e in entities:
        e["text"] = text[e["start"] : e["end"]]
        e["score"] = float(np.mean(e.pop("scores")))
    return entities
