"""The labelled data: its source, columns, task kind, splits, cleaning rules and checks (`data`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.base import Section
from tasks.config.sources import SourceConfig
from tasks.kinds import kind_of

# The registered kinds' names (tasks.kinds), spelled out so the config form lists them; a unit test holds the two equal.
TaskName = Literal["classification", "pair_classification", "regression", "ner", "multi_label"]
DEFAULT_MAX_CHARS = 10_000  # the cap of pair classification and NER, whose texts are short by nature


class SplitConfig(Section):
    """How train / validation / test are made."""

    use_source_splits: bool = Field(True, description="keep the source's own splits when it has them")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="share of rows for validation")
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="share of rows for test")
    seed: int = Field(42, description="salt of the split hash; a row keeps its split as the data grows")


class CleanConfig(Section):
    """Cleaning rules; every removed row is quarantined with its reason."""

    normalize_unicode: bool = Field(True, description="NFKC-normalise texts")
    collapse_whitespace: bool = Field(True, description="collapse runs of whitespace, strip ends")
    drop_duplicates: bool = Field(True, description="drop exact duplicate (text, label) rows")
    drop_conflicts: bool = Field(True, description="drop texts that appear with different labels")
    drop_leakage: bool = Field(True, description="drop validation/test rows whose text is also in train")
    max_chars: int | None = Field(
        None,
        gt=0,
        description="texts longer than this (in characters) are quarantined; empty: no cap for "
        "classification and regression, 10,000 for pair classification and NER",
    )
    augment: bool = Field(False, description="EDA-style augmentation (random swap, deletion) of train")
    augment_copies: int = Field(1, ge=1, le=8, description="augmented copies per training row")


class ValidationConfig(Section):
    """Data checks run by Great Expectations before training."""

    min_rows: int = Field(50, ge=1, description="minimum rows in train after cleaning")
    min_class_rows: int = Field(
        10, ge=0, description="critical: every class has at least this many train rows (classification, pairs)"
    )
    warn_class_rows: int = Field(30, ge=0, description="warning: names each class with fewer train rows than this")
    max_chars: int | None = Field(
        None,
        gt=0,
        description="upper bound on text length in characters; empty: none for classification and "
        "regression, 10,000 for pair classification and NER",
    )
    fail_on_warning: bool = Field(False, description="treat warning-level expectations as critical")


def char_cap(max_chars: int | None, task: str) -> int | None:
    """The character cap in force: the configured one, else none for kinds that read long texts, else 10,000."""
    if max_chars is not None:
        return max_chars
    return None if kind_of(task).uncapped else DEFAULT_MAX_CHARS


class DataConfig(Section):
    """The labelled data: source, columns, task kind, splits and rules."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    extra_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="more sources appended to `source`, e.g. [{kind: feedback}] for the corrected labels of "
        "served predictions; same columns as `source` (feedback rows come as text/label), same "
        "cleaning and stable hash splits",
    )
    task: TaskName = Field(
        "classification", description="classification | pair_classification | regression | ner | multi_label"
    )
    text_column: str = Field("text", description="column holding the text (the first text for pairs)")
    text_pair_column: str | None = Field(None, description="column holding the second text (pairs)")
    label_column: str = Field(
        "label",
        description="column holding the label or target value; multi_label: a list (JSON list, or a list "
        "column in Parquet/JSONL) or a delimited string (see label_separator); empty means none of the labels",
    )
    label_separator: str | None = Field(
        None,
        min_length=1,
        description="multi_label: the character(s) between a row's labels in a string cell, e.g. '|' for 'a|b'",
    )
    tokens_column: str = Field("tokens", description="NER: column holding the list of words")
    tags_column: str = Field("tags", description="NER: column holding the list of BIO tags")
    labels: list[str] | None = Field(
        None, description="the declared label set, in id order; inferred from train when empty"
    )
    label_map: dict[str, str] | None = Field(
        None, description="rename labels before anything else sees them, e.g. {Positive: positive, pos: positive}"
    )
    max_rows: int | None = Field(None, gt=0, description="use at most this many rows (a stable sample), for quick runs")
    splits: SplitConfig = Field(default_factory=SplitConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _check_separator(self) -> DataConfig:
        if self.label_separator is not None and not kind_of(self.task).is_multi_label:
            raise ValueError(f"data.label_separator reads label sets (task multi_label), not task '{self.task}'")
        return self

    @model_validator(mode="after")
    def _check_pairs(self) -> DataConfig:
        if kind_of(self.task).reads_pairs and not self.text_pair_column:
            raise ValueError(f"task '{self.task}' needs data.text_pair_column")
        return self
