"""Decoding logits into answers for every task kind: labels and probabilities, values, word tags, entities.

The PyTorch scorer of evaluation decodes with these same functions, so both backends read logits alike.
A model's decision rule (its fitted temperature and, for binary classifiers, its chosen threshold)
travels in the bundle meta and is applied here, so every scorer answers with the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.labels import INSIDE, entity_type, opens_entity


@dataclass(frozen=True)
class Decision:
    """How class logits become an answer: probabilities = softmax(logits / temperature); for binary
    classifiers with a threshold, the answer is the `positive` class when its probability >= threshold."""

    temperature: float = 1.0
    threshold: float | None = None
    positive: int | None = None

    @classmethod
    def of_meta(cls, meta: dict) -> Decision:
        """The rule a model folder's or bundle's finetune_flow.json records (none recorded: plain softmax, argmax)."""
        d = meta.get("decision") or {}
        label = d.get("positive_label")
        return cls(
            float(d.get("temperature", 1.0)),
            d.get("threshold"),
            meta["labels"].index(label) if label is not None else None,
        )


PLAIN = Decision()


def describe_rule(record: dict) -> str:
    """How the threshold of a decision record (the meta's "decision") was set, in words, for the model card and /model."""
    rule = record.get("rule")
    if rule is None:
        return "none (the most probable label)"
    if isinstance(rule, float):
        return f"fixed at {rule}"
    if "max_f1" in rule:
        return f"the best F1 of '{rule['max_f1']}' on validation"
    return f"the most recall at precision >= {rule['min_precision']} of '{rule['label']}' on validation"


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

    def confidence(self) -> list[float | None]:
        """Per row: the top probability; NER: its mean over the words (1.0 without words); None for regression."""
        if self.task == "regression":
            return [None] * len(self)
        assert self.probabilities is not None, "classifiers and NER have probabilities (None only for regression)"
        if self.task == "ner":
            return [float(p.max(-1).mean()) if len(p) else 1.0 for p in self.probabilities]
        probs, preds = self.probabilities, self.predictions
        assert isinstance(probs, np.ndarray) and isinstance(preds, np.ndarray), "a classifier's scores are arrays"
        # The chosen label's probability: under a threshold it need not be the largest.
        return probs[np.arange(len(self)), preds].astype(float).tolist()

    def answers(self) -> list:
        """Per row: the label name, the value, or the word tags (the form a person reads)."""
        if self.task in ("classification", "pair_classification"):
            assert self.labels is not None, "a classifier has a label set (None only for regression)"
            assert isinstance(self.predictions, np.ndarray), "a classifier's predictions are an array of class ids"
            return [self.labels[int(k)] for k in self.predictions]
        if self.task == "regression":
            assert isinstance(self.predictions, np.ndarray), "regression predictions are an array of values"
            return [float(v) for v in self.predictions]
        return list(self.predictions)


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (shifted by the max, so large logits do not overflow)."""
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


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


def decide(probs: np.ndarray, decision: Decision) -> np.ndarray:
    """Class ids from calibrated probabilities: the positive class at or above the threshold, else argmax."""
    if decision.threshold is None:
        return probs.argmax(-1).astype(np.int64)
    assert decision.positive is not None, "a threshold is recorded with its positive class"
    return np.where(probs[:, decision.positive] >= decision.threshold, decision.positive, 1 - decision.positive).astype(
        np.int64
    )


def decode_logits(task: str, logits: list[np.ndarray], labels: list[str] | None, decision: Decision = PLAIN) -> Scores:
    """Scores from logits per row: [labels] per text, [1] per regression text, [words, labels] per NER row.

    decision: the temperature and threshold of classification models (NER and regression ignore it).
    """
    if task == "regression":
        values = np.array([float(np.ravel(row)[0]) for row in logits], dtype=np.float64)
        return Scores(task, labels, values, None)
    assert labels is not None, "classification and NER have a label set (None only for regression)"
    if task == "ner":
        word_probs = [softmax(np.asarray(row, dtype=np.float32)) for row in logits]
        return Scores(task, labels, [[labels[int(k)] for k in p.argmax(-1)] for p in word_probs], word_probs)
    if not logits:
        return Scores(task, labels, np.zeros(0, np.int64), np.zeros((0, len(labels)), np.float32))
    probs = softmax(np.stack(logits).astype(np.float32) / np.float32(decision.temperature))
    return Scores(task, labels, decide(probs, decision), probs)


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
