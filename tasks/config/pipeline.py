"""Typed pipeline configuration: the single parameter of every flow.

Every field carries its own description, so the Prefect UI form, `ftflow --help`
and the YAML presets in `configs/` explain themselves. Defaults work as they are.
"""

from __future__ import annotations

import hashlib
import json

import yaml
from pydantic import Field, field_validator, model_validator

from tasks.config.base import Section, check_name
from tasks.config.baselines import BaselinesConfig
from tasks.config.data import DataConfig
from tasks.config.model import DecisionConfig, ExportConfig, ModelConfig
from tasks.config.operations import MonitoringConfig, RegistryConfig
from tasks.config.training import SearchConfig, TrainingConfig
from tasks.kinds import kind_of


class PipelineConfig(Section):
    """Everything one fine-tuning run needs."""

    name: str = Field(
        "quickstart",
        description="name of this configuration; used in run names and run folders (letters, digits, '.', '_', '-')",
    )
    run_dir: str = Field("runs", description="folder holding one sub-folder per run")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        return check_name(v, "name")

    @model_validator(mode="after")
    def _check_loss_fits_task(self) -> PipelineConfig:
        t, task = self.training, self.data.task
        kind = kind_of(task)
        allowed = kind.losses
        if t.loss not in allowed:
            raise ValueError(f"training.loss '{t.loss}' does not fit data.task '{task}'; allowed: {', '.join(allowed)}")
        if t.focal_alpha is not None and t.class_weights not in (None, "auto"):
            raise ValueError("set training.focal_alpha or training.class_weights, not both (focal alpha is the weight)")
        if not kind.has_labels and (t.class_weights not in (None, "auto") or t.focal_alpha is not None):
            raise ValueError(f"training.class_weights / focal_alpha need a classification task, not {task}")
        if t.label_smoothing and (not kind.has_labels or t.loss == "focal"):
            raise ValueError(
                "training.label_smoothing applies to cross-entropy; "
                f"set it to 0 for {task if not kind.has_labels else 'the focal loss'}"
            )
        return self

    @model_validator(mode="after")
    def _check_threshold_fits_task(self) -> PipelineConfig:
        rule, kind = self.decision.threshold, kind_of(self.data.task)
        if rule is not None and not kind.calibrated:
            raise ValueError(
                f"decision.threshold applies to binary classifiers, not data.task '{self.data.task}'; set it to null"
            )
        if getattr(rule, "min_precision", None) is not None and rule.label is None and not kind.is_multi_label:  # type: ignore[union-attr]
            raise ValueError("decision.threshold {min_precision: P} needs the positive label: add label: LABEL")
        return self

    @model_validator(mode="after")
    def _check_long_text_fits_task(self) -> PipelineConfig:
        if self.model.long_text == "chunk" and not kind_of(self.data.task).uncapped:
            raise ValueError(
                f"model.long_text 'chunk' reads long documents for classification and regression, "
                f"not {self.data.task}; set model.long_text to truncate"
            )
        return self

    @model_validator(mode="after")
    def _check_head_fits_task(self) -> PipelineConfig:
        kind, task = kind_of(self.data.task), self.data.task
        if self.model.head_init == "probe" and kind.is_token_level:
            raise ValueError(
                f"model.head_init 'probe' starts a sequence head, not {task}'s token head; set it to random"
            )
        if self.training.strategy == "contrastive" and not kind.is_single_label:  # auto decides by the task
            raise ValueError(
                f"training.strategy 'contrastive' draws pairs from single-label classes, not {task}; set it to fine_tune"
            )
        return self

    @model_validator(mode="after")
    def _check_search_space(self) -> PipelineConfig:
        searchable = sorted(set(TrainingConfig.model_fields) - {"distributed", "use_cpu", "seed", "contrastive"})
        unknown = [k for k in self.search.space if k not in searchable]
        if unknown:
            raise ValueError(
                f"search.space has {unknown}, which are not training fields; searchable: {', '.join(searchable)}"
            )
        return self

    def digest(self) -> str:
        """Short content digest of the resolved config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
