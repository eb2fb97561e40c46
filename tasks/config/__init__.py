"""Typed pipeline configuration: `PipelineConfig` (the single parameter of every flow), its sections, loading.

One module per part of the pipeline (sources, data, model, training, operations, pipeline); `load`
reads presets and overrides. The names below are the package's public API.
"""

from tasks.config.base import NAME_PATTERN, ConfigError, check_name
from tasks.config.baselines import BaselineKind, BaselinesConfig
from tasks.config.data import CleanConfig, DataConfig, SplitConfig, TaskName, ValidationConfig, char_cap
from tasks.config.load import apply_overrides, flatten_config, load_config
from tasks.config.model import DecisionConfig, ExportConfig, MaxF1Target, MinPrecisionTarget, ModelConfig
from tasks.config.operations import MonitoringConfig, RegistryConfig
from tasks.config.pipeline import PipelineConfig
from tasks.config.sources import SourceConfig
from tasks.config.training import DistributedConfig, SearchConfig, SearchParam, TrainingConfig

__all__ = [
    "NAME_PATTERN",
    "BaselineKind",
    "BaselinesConfig",
    "CleanConfig",
    "ConfigError",
    "DataConfig",
    "DecisionConfig",
    "DistributedConfig",
    "ExportConfig",
    "MaxF1Target",
    "MinPrecisionTarget",
    "ModelConfig",
    "MonitoringConfig",
    "PipelineConfig",
    "RegistryConfig",
    "SearchConfig",
    "SearchParam",
    "SourceConfig",
    "SplitConfig",
    "TaskName",
    "TrainingConfig",
    "ValidationConfig",
    "apply_overrides",
    "char_cap",
    "check_name",
    "flatten_config",
    "load_config",
]
