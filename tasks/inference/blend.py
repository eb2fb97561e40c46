"""A blend of the fine-tuned model with the bag-of-words baseline, run by the inference core.

When `model.blend` is auto and the baseline helps on validation, a bundle serves
p = weight * softmax(logits / temperature) + (1 - weight) * p_baseline, where p_baseline comes from
the TF-IDF + logistic regression exported to ONNX (baseline.onnx in the bundle). The mixture's log is
handed on as the row's logits, so the decision rule (fitted on the blended validation logits) and
every scorer read it as they read a model's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.inference.session import create_session
from tasks.kinds.decision import softmax

BASELINE_FILE = "baseline.onnx"
# scikit-learn's default token pattern. The ONNX graph splits on single spaces only, so words are found
# here, in Python, for fitting and serving alike: ONNX Runtime's own tokenizer drops no one-letter words
# and its case folding needs an installed locale.
_WORDS = re.compile(r"(?u)\b\w\w+\b")
_FLOOR = 1e-12  # a probability the log can read (a mixture with weight 1 can have exact zeros)


def bag_of_words_text(text: str) -> str:
    """The text as the bag of words reads it: lowercased words of two or more characters, one space apart."""
    return " ".join(_WORDS.findall(text.lower()))


@dataclass(frozen=True)
class Blend:
    """How the model's probabilities are mixed with the baseline's: `weight` is the model's share."""

    weight: float
    temperature: float = 1.0
    file: str = BASELINE_FILE

    @classmethod
    def of_record(cls, record: dict | None) -> Blend | None:
        """The blend a decision record holds (its `blend` part); None when the model serves alone (weight 1)."""
        part = (record or {}).get("blend")
        if not part or float(part["weight"]) >= 1.0:
            return None
        return cls(float(part["weight"]), float(part.get("temperature", 1.0)), str(part.get("file", BASELINE_FILE)))


class BaselineScorer:
    """The bag-of-words baseline's ONNX graph: class probabilities for texts (clean-stage normalised)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        self.session = create_session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """[rows, labels] probabilities, in the labels' order."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        feed = np.array([bag_of_words_text(t) for t in texts], dtype=object).reshape(-1, 1)
        return np.asarray(self.session.run(["probabilities"], {self.input_name: feed})[0], dtype=np.float32)


def mix_logits(logits: list[np.ndarray], baseline: np.ndarray, blend: Blend) -> list[np.ndarray]:
    """The rows' blended logits: the log of the weighted mixture of both models' probabilities."""
    if not logits:
        return []
    model = softmax(np.stack(logits).astype(np.float32) / np.float32(blend.temperature))
    mixed = blend.weight * model + (1.0 - blend.weight) * baseline
    return list(np.log(np.clip(mixed, _FLOOR, None)).astype(np.float32))


@dataclass(frozen=True)
class BlendedScorer:
    """A blend with its baseline's session: turns a batch's model logits into the blend's, given its texts."""

    blend: Blend
    baseline: BaselineScorer

    @classmethod
    def load(cls, blend: Blend, path: str | Path, threads: int | None = None) -> BlendedScorer:
        """The blend with its baseline graph read from `path`."""
        return cls(blend, BaselineScorer(path, threads))

    def __call__(self, texts: list[str], logits: list[np.ndarray]) -> list[np.ndarray]:
        return mix_logits(logits, self.baseline.probabilities(texts), self.blend)
