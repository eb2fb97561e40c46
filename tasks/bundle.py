"""A model's metadata, `finetune_flow.json`, as one typed record: what training, export and every scorer agree on.

Training writes the model folder's record (task, labels, max_length, what trained it); evaluation returns its
decision record (calibration and thresholds fitted on validation, with what they reached) without touching the
model folder; export builds the serving bundle's record once from both, adding the text normalisation and the
ONNX file that serves. Readers get it validated: a bundle that lacks a field, or has one of the wrong type,
fails on load with the field named, not later as a KeyError inside a request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.io import read_json, write_json

META_FILE = "finetune_flow.json"
KEPT_NULL = ("labels",)  # null says something (regression has no labels); other absent parts are left out


class DecisionRecord(BaseModel):
    """How logits become answers (tasks.kinds.decision.Decision reads it), and what it reached on validation/test."""

    model_config = ConfigDict(extra="forbid")

    calibration: str = "none"
    temperature: float = 1.0
    threshold: float | None = None  # binary classifiers: the positive label's threshold
    positive_label: str | None = None
    rule: Any = None  # decision.threshold as configured: None, a number or a target mapping
    scales: list[float] | None = None  # multi-label: Platt scaling and a threshold per label
    biases: list[float] | None = None
    thresholds: list[float] | None = None
    per_label: list[dict] | None = None  # multi-label: what each label's threshold reached on validation
    validation: dict = Field(default_factory=dict)  # rows, ECE and NLL before/after, the threshold's figures
    test: dict | None = None  # the same on the test split, once evaluation has scored it
    blend: dict | None = (
        None  # model.blend: weight, temperature, file, and what validation said (tasks/inference/blend.py)
    )


class ModelMeta(BaseModel):
    """finetune_flow.json of a model folder (RUN/model) or a serving bundle (RUN/onnx)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    labels: list[str] | None
    max_length: int
    # Provenance: training records it; a bundle assembled by hand (or by another exporter) may lack it.
    base_model: str | None = None
    config_digest: str | None = None
    data_digest: str | None = None
    long_text: dict = Field(default_factory=dict)  # tasks.inference.windows.LongText fields; none: truncate
    training: dict = Field(default_factory=dict)  # the training values used (after any search and the floor)
    decision: DecisionRecord | None = None  # bundles of classifiers; absent in a model folder
    normalize: dict | None = None  # bundles: the clean stage's text rules the service applies
    serving_file: str | None = None  # bundles: the ONNX file that answers

    def as_dict(self) -> dict:
        """The record as JSON-ready data (what the file holds): parts a folder lacks (a model folder's decision,
        serving file and text rules; a hand-made bundle's provenance) are left out; `labels` stays, null or not,
        and inside the decision record every key stays."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if v is not None or k in KEPT_NULL}


def read_meta(folder: str | Path) -> ModelMeta:
    """The validated record of a model folder or bundle; a clear error naming the file and the field."""
    path = Path(folder) / META_FILE
    try:
        return ModelMeta.model_validate(read_json(path))
    except FileNotFoundError:
        raise ValueError(f"{folder} is not a model folder or bundle: it has no {META_FILE}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{path} is not a finetune-flow model record ({problems})") from None


def write_meta(folder: str | Path, meta: ModelMeta) -> str:
    """Write the record atomically; return its path."""
    return write_json(Path(folder) / META_FILE, meta.as_dict())
