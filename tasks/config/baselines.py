"""The cheap models every run fits beside the fine-tuned one, on the same splits (`baselines`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.base import Section

BaselineKind = Literal["bag_of_words", "probe", "cosine"]
ALL_KINDS: tuple[BaselineKind, ...] = ("bag_of_words", "probe", "cosine")


class BaselinesConfig(Section):
    """What a user would otherwise fit in seconds; a model that does not beat the best of them is tagged."""

    enabled: bool = Field(True, description="fit the baselines (classification, pairs, regression; not NER)")
    kinds: list[BaselineKind] = Field(
        default_factory=lambda: list(ALL_KINDS),
        description="bag_of_words: TF-IDF word 1-2-grams + logistic regression (ridge for regression); probe: "
        "the same linear model on the frozen pretrained encoder's mean-pooled embeddings; cosine: the cosine "
        "of a pair's two frozen embeddings, a line fitted on train (pair regression only)",
    )
    probe_max_rows: int = Field(
        1000,
        ge=10,
        description="the probe embeds at most this many train rows (a stable, label-stratified sample; its "
        "regularisation is chosen by cross-validation on them, and test is scored whole): the frozen encoder's "
        "forward pass is the baselines' only slow part",
    )
    max_features: int = Field(200_000, ge=100, description="bag_of_words: the vocabulary's size cap")
