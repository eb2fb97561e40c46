"""What a task kind is: the questions the rest of the code asks instead of comparing task names.

A kind is a frozen object with plain facts (its losses, primary metric, calibration, the columns it
reads) and the light behaviour that differs between kinds (decoding logits into answers, reading
targets). Torch-free and pandas-free at import: the config models and the inference core ask it.
Heavy code (heads, metric modules, collators) lives in tasks.modelling and picks its branch by the
kind's answer shape (`is_single_label`, `predicts_value`, `is_token_level`, `is_multi_label`), raising for any other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.labels import label_sets_of, labels_as_strings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from tasks.kinds.decision import Decision


class UnknownTaskKind(ValueError):
    """A task name no registered kind answers to."""


class UnsupportedTaskKind(NotImplementedError):
    """A kind reached code that handles only other answer shapes: fail rather than answer wrongly."""


@dataclass(frozen=True)
class TaskKind(ABC):
    """One task kind: what differs between classification, pairs, regression, NER and the next one.

    Exactly one of `is_single_label`, `predicts_value`, `is_token_level` and `is_multi_label` is True for
    the built-in kinds; code that branches on the answer shape asks these and raises `unsupported` for anything else.
    """

    name: str
    # The answer's shape.
    is_single_label: bool = False  # one class per text, softmax over the label set
    predicts_value: bool = False  # one number per text
    is_token_level: bool = False  # one BIO tag per word
    is_multi_label: bool = False  # any number of labels per text (none included), sigmoid per label
    # What it reads and how.
    reads_pairs: bool = False  # two texts per row: text and text_pair
    uncapped: bool = False  # long texts read whole or in chunks (model.long_text): no character cap by default
    augments: bool = False  # EDA augmentation (clean.augment) keeps the target of a row
    # How it is trained, decided and compared.
    losses: tuple[str, ...] = ("auto",)  # training.loss values it allows; "auto" picks `default_loss`
    default_loss: str = ""
    primary_metric: str = ""  # selects the best checkpoint and gates promotion
    interval_metrics: tuple[str, ...] = ()  # the test metrics that get bootstrap intervals
    calibrated: bool = False  # a temperature fitted on validation; takes a decision threshold
    has_baselines: bool = False  # bag-of-words and frozen-embedding baselines fit it
    skew_weighted: bool = False  # class_weights auto balances a skewed train set
    problem_type: str | None = None  # the transformers head's problem_type
    # How it is described.
    intended_use: str = ""  # the model card's intended-use sentence
    target_noun: str = "Labels"  # what the model card calls its label set
    report_unit: str = "test rows"  # what the weak-class report counts

    @property
    def has_labels(self) -> bool:
        """Whether the kind predicts from a label (or tag) set; regression has none."""
        return not self.predicts_value

    @property
    def expectation_suite(self) -> str:
        """The Great Expectations suite's file name under expectations/."""
        return f"{self.name}.json"

    @property
    def input_columns(self) -> list[str]:
        """The clean-split columns a scorer reads."""
        if self.is_token_level:
            return ["tokens"]
        return ["text", "text_pair"] if self.reads_pairs else ["text"]

    @property
    def target_columns(self) -> list[str]:
        """The clean-split columns holding the target."""
        return ["tags"] if self.is_token_level else ["label"]

    @property
    def shown_columns(self) -> list[str]:
        """The columns that show a row's text in data reports (NER: its words joined)."""
        return ["_text"] if self.is_token_level else (["text", "text_pair"] if self.reads_pairs else ["text"])

    def num_labels(self, labels: Sequence[str] | None) -> int:
        """The head's output width."""
        if self.predicts_value:
            return 1
        if labels is None:
            raise ValueError(f"a {self.name} model needs its label set (data.labels or the train split's labels)")
        return len(labels)

    def unsupported(self, what: str) -> UnsupportedTaskKind:
        """The error for code that has no branch for this kind's answer shape."""
        return UnsupportedTaskKind(f"task kind '{self.name}' has no {what}; add it where that is defined")

    def references_of(self, df: pd.DataFrame, labels: Sequence[str] | None) -> list[Any]:
        """The targets of a clean split in the form the scorers predict: class ids, values or tag lists."""
        if self.is_token_level:
            return [list(tags) for tags in df["tags"]]
        if self.predicts_value:
            return [float(v) for v in df["label"]]
        if self.is_single_label:
            assert labels is not None, "a classifier has a label set (None only for regression)"
            label2id = {name: i for i, name in enumerate(labels)}
            return [label2id[str(v)] for v in df["label"]]
        raise self.unsupported("references")

    def read_targets(
        self, column: pd.Series, labels: Sequence[str] | None, separator: str | None = None, origin: str = "the data"
    ) -> pd.Series:
        """A label column as training data reads it: class names (1.0 reads "1"), label sets, or as given.

        Raises tasks.labels.LabelSetError for a label-set column that mixes lists and plain strings.
        """
        if self.is_single_label:
            return labels_as_strings(column, list(labels) if labels is not None else None)
        if self.is_multi_label:
            return label_sets_of(column, separator, origin)
        return column

    @abstractmethod
    def decode(
        self, logits: list[np.ndarray], labels: list[str] | None, decision: Decision
    ) -> tuple[np.ndarray | list[list[str]], np.ndarray | list[np.ndarray] | None]:
        """Predictions and probabilities from per-row logits (see tasks.inference.decode.Scores)."""

    @abstractmethod
    def confidence(self, predictions: Any, probabilities: Any) -> list[float | None]:
        """Per row: how sure the answer is (None where the kind has no probabilities)."""

    @abstractmethod
    def answers(self, predictions: Any, labels: list[str] | None) -> list:
        """Per row: the answer in the form a person reads (a label, a value, word tags)."""
