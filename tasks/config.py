"""Typed pipeline configuration: the single parameter of every flow.

Every field carries its own description, so the Prefect UI form, `ftflow --help`
and the YAML presets in `configs/` explain themselves. Defaults work as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_serializer, field_validator, model_validator

from tasks.labels import allowed_losses
from tasks.secrets import redact_text, redact_url, warn_literal_credentials

TaskKind = Literal["classification", "pair_classification", "regression", "ner"]
SourceKind = Literal["file", "disk", "hub", "package", "url", "sql", "conll", "feedback"]
FileFormat = Literal["csv", "tsv", "jsonl", "json", "parquet"]
# Names that become folder names, run names and MLflow names: nothing that could leave run_dir.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256_PATTERN = re.compile(r"[0-9a-fA-F]{64}")


def check_name(value: str, field: str) -> str:
    """`value` when it is a safe name (letters, digits, '.', '_', '-'; starts with a letter or digit)."""
    if not NAME_PATTERN.fullmatch(value or ""):
        raise ValueError(f"{field} {value!r} may hold only letters, digits, '.', '_' and '-' (starting with a "
                         f"letter or digit, at most 128), so it cannot name a path outside run_dir; e.g. 'my-model.v2'")
    return value


# Tasks whose long texts the model reads whole (model.long_text) or cuts: no character cap by default.
UNCAPPED_TASKS = ("classification", "regression")
DEFAULT_MAX_CHARS = 10_000  # the cap of pair classification and NER, whose texts are short by nature


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field, the value and what is allowed."""


class _Section(BaseModel):
    # Unknown keys are typos far more often than intent: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class SourceConfig(_Section):
    """Where the labelled data comes from."""

    kind: SourceKind = Field("package", description="file | disk | hub | package | url | sql | conll | feedback")
    path: str | None = Field(None, description="file or folder (file, disk, conll); a file or glob of files")
    format: FileFormat | None = Field(None, description="file format; inferred from the extension when empty")
    name: str | None = Field(
        "rotten_tomatoes",
        description="packaged dataset name (package) or hub dataset id (hub), e.g. 'glue'",
    )
    config: str | None = Field(None, description="hub dataset configuration, e.g. 'mrpc'")
    revision: str | None = Field(None, description="hub dataset revision (commit or tag) to pin")
    split: str | None = Field(None, description="only this split of the source (hub, disk); all when empty")
    url: str | None = Field(
        None, description="HTTP(S) URL of a data file (url); put secrets in ${ENV_NAME} references, e.g. ?token=${DATA_TOKEN}"
    )
    sha256: str | None = Field(None, description="expected sha256 (64 hex digits) of the downloaded file (url); required there")
    query: str | None = Field(None, description="SQL query returning one row per example (sql)")
    connection: str | None = Field(
        None, description="SQLAlchemy URL (sql), e.g. sqlite:///data.db or postgresql://reader:${DB_PASSWORD}@host/db"
    )
    model_name: str | None = Field(
        None, description="feedback: only rows this registered model answered; every logged model when empty"
    )
    log_location: str | None = Field(
        None, description="feedback: the prediction log (folder or SQLAlchemy URL); FTFLOW_PREDICTION_LOG or "
                          "<mlruns>/ when empty"
    )

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_PATTERN.fullmatch(v):
            raise ValueError("must be 64 hex digits, as `sha256sum FILE` prints")
        return v.lower() if v else v

    @field_validator("url", "connection")
    @classmethod
    def _warn_literal_credentials(cls, v: str | None, info) -> str | None:
        if v:
            warn_literal_credentials(f"data.source.{info.field_name}", v)
        return v

    # Every written copy of the config (config.yaml, params, train_spec.json, Prefect parameters)
    # is a dump: literal credentials are masked there; ${ENV} references stay as written.
    @field_serializer("url", "connection")
    def _mask_credentials(self, v: str | None) -> str | None:
        return redact_url(v) if v else v

    encoding: str = Field(
        "utf-8", description="text encoding of csv/tsv/jsonl/json/conll files, e.g. cp1252; auto detects it "
                             "(and reports what it chose); a byte-order mark always wins"
    )
    on_bad_lines: Literal["quarantine", "error"] = Field(
        "quarantine", description="a JSONL line that is not JSON, or a CSV/TSV row with the wrong field count: "
                                  "quarantine it with its line number and reason, or refuse the file"
    )

    @model_validator(mode="after")
    def _check_required(self) -> "SourceConfig":
        needs = {
            "file": ["path"],
            "disk": ["path"],
            "conll": ["path"],
            "hub": ["name"],
            "package": ["name"],
            "url": ["url", "sha256"],
            "sql": ["query", "connection"],
            "feedback": [],
        }[self.kind]
        missing = [f for f in needs if not getattr(self, f)]
        if missing:
            raise ValueError(f"source kind '{self.kind}' needs {', '.join(missing)}")
        return self


class SplitConfig(_Section):
    """How train / validation / test are made."""

    use_source_splits: bool = Field(True, description="keep the source's own splits when it has them")
    validation_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="share of rows for validation")
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="share of rows for test")
    seed: int = Field(42, description="salt of the split hash; a row keeps its split as the data grows")


class CleanConfig(_Section):
    """Cleaning rules; every removed row is quarantined with its reason."""

    normalize_unicode: bool = Field(True, description="NFKC-normalise texts")
    collapse_whitespace: bool = Field(True, description="collapse runs of whitespace, strip ends")
    drop_duplicates: bool = Field(True, description="drop exact duplicate (text, label) rows")
    drop_conflicts: bool = Field(True, description="drop texts that appear with different labels")
    drop_leakage: bool = Field(True, description="drop validation/test rows whose text is also in train")
    max_chars: int | None = Field(
        None, gt=0, description="texts longer than this (in characters) are quarantined; empty: no cap for "
                                "classification and regression, 10,000 for pair classification and NER")
    augment: bool = Field(False, description="EDA-style augmentation (random swap, deletion) of train")
    augment_copies: int = Field(1, ge=1, le=8, description="augmented copies per training row")


class ValidationConfig(_Section):
    """Data checks run by Great Expectations before training."""

    min_rows: int = Field(50, ge=1, description="minimum rows in train after cleaning")
    min_class_rows: int = Field(
        10, ge=0, description="critical: every class has at least this many train rows (classification, pairs)"
    )
    warn_class_rows: int = Field(30, ge=0, description="warning: names each class with fewer train rows than this")
    max_chars: int | None = Field(
        None, gt=0, description="upper bound on text length in characters; empty: none for classification and "
                                "regression, 10,000 for pair classification and NER")
    fail_on_warning: bool = Field(False, description="treat warning-level expectations as critical")


def char_cap(max_chars: int | None, task: str) -> int | None:
    """The character cap in force: the configured one, else none for classification/regression, else 10,000."""
    if max_chars is not None:
        return max_chars
    return None if task in UNCAPPED_TASKS else DEFAULT_MAX_CHARS


class DataConfig(_Section):
    """The labelled data: source, columns, task kind, splits and rules."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    extra_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="more sources appended to `source`, e.g. [{kind: feedback}] for the corrected labels of "
                    "served predictions; same columns as `source` (feedback rows come as text/label), same "
                    "cleaning and stable hash splits",
    )
    task: TaskKind = Field("classification", description="classification | pair_classification | regression | ner")
    text_column: str = Field("text", description="column holding the text (the first text for pairs)")
    text_pair_column: str | None = Field(None, description="column holding the second text (pairs)")
    label_column: str = Field("label", description="column holding the label or target value")
    tokens_column: str = Field("tokens", description="NER: column holding the list of words")
    tags_column: str = Field("tags", description="NER: column holding the list of BIO tags")
    labels: list[str] | None = Field(
        None, description="the declared label set, in id order; inferred from train when empty"
    )
    label_map: dict[str, str] | None = Field(
        None, description="rename labels before anything else sees them, e.g. {Positive: positive, pos: positive}"
    )
    max_rows: int | None = Field(
        None, gt=0, description="use at most this many rows (a stable sample), for quick runs"
    )
    splits: SplitConfig = Field(default_factory=SplitConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _check_pairs(self) -> "DataConfig":
        if self.task == "pair_classification" and not self.text_pair_column:
            raise ValueError("task 'pair_classification' needs data.text_pair_column")
        return self


class ModelConfig(_Section):
    """The pretrained checkpoint to fine-tune."""

    name: str = Field(
        "minilm",
        description="hub id (e.g. bert-base-uncased), local folder, or 'minilm' for the packaged offline MiniLM",
    )
    revision: str | None = Field(None, description="hub revision to pin")
    max_length: int = Field(128, ge=8, le=4096, description="longest tokenised input; longer is truncated")
    label_all_subtokens: bool = Field(False, description="NER: label every sub-token, not only the first")
    long_text: Literal["truncate", "chunk"] = Field(
        "truncate", description="texts longer than max_length tokens: truncate (read the start only) or chunk "
                                "(windows of max_length tokens; a document's answer aggregates its windows' logits)")
    stride: int | None = Field(
        None, ge=0, description="chunk: tokens shared by consecutive windows; empty: max_length // 4")
    aggregate: Literal["mean", "max"] = Field("mean", description="chunk: a document's logits are the mean or "
                                                                   "the max of its windows' logits")

    def window_stride(self) -> int:
        """The overlap of consecutive windows in tokens (the configured stride, else max_length // 4)."""
        return self.max_length // 4 if self.stride is None else self.stride

    @model_validator(mode="after")
    def _check_stride(self) -> "ModelConfig":
        if self.window_stride() > self.max_length // 2:
            raise ValueError(f"model.stride = {self.stride} is more than half of model.max_length "
                             f"({self.max_length}); windows would mostly repeat each other: use at most "
                             f"{self.max_length // 2}")
        return self


class DistributedConfig(_Section):
    nproc_per_node: int = Field(1, ge=1, description="processes for data-parallel training (torchrun)")


class TrainingConfig(_Section):
    """Hyperparameters; the defaults suit the offline MiniLM on a few CPU cores."""

    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    train_batch_size: int = Field(32, ge=1, description="examples per device per step")
    eval_batch_size: int = Field(64, ge=1, description="examples per device at evaluation")
    epochs: float = Field(3.0, gt=0, description="passes over train")
    max_steps: int = Field(-1, description="stop after this many steps; -1 to use epochs")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps for linear warm-up")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="learning-rate schedule")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adamw (default) or adam")
    loss: Literal["auto", "cross_entropy", "mse", "focal"] = Field(
        "auto", description="auto picks cross_entropy for classification/NER and mse for regression"
    )
    class_weights: list[float] | Literal["auto", "balanced"] | None = Field(
        "auto", description="cross-entropy/focal class weights, 'balanced', or auto: balanced when the largest "
                            "train class has at least 5x the rows of the smallest, else none"
    )
    focal_gamma: float = Field(2.0, ge=0, description="focal loss focusing parameter")
    focal_alpha: list[float] | None = Field(None, description="focal loss per-class alpha")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="cross-entropy against (1 - e) one-hot + e uniform targets; 0 turns it off"
    )
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 disables")
    seed: int = Field(42)
    group_by_length: bool = Field(True, description="batch examples of similar length (less padding)")
    pad_to_max_length: bool = Field(False, description="pad every example to max_length (the old recipe)")
    mixed_precision: Literal["auto", "fp32", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device runs it natively (GPUs from Ampere on; CPUs "
                            "with AMX-BF16 or AVX512-BF16), else fp16 on GPUs and fp32 on CPUs; fp32 (or no) "
                            "turns it off. Weights stay fp32"
    )
    gradient_checkpointing: bool = Field(False)
    early_stopping_patience: int | None = Field(None, ge=1, description="evaluations without improvement")
    metric_for_best_model: str | None = Field(
        None, description="default: f1 (classification: the positive class's F1 with two labels, macro-F1 with "
                          "more), pearson (regression), f1 (ner)"
    )
    logging_steps: int = Field(20, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps; per epoch when empty")
    save_total_limit: int = Field(2, ge=1)
    use_cpu: bool = Field(False, description="train on CPU even when a GPU is present")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)


class SearchParam(_Section):
    """One dimension of the search space: a range (low, high, optional log scale) or a list of choices."""

    low: float | None = Field(None, description="lower bound (inclusive)")
    high: float | None = Field(None, description="upper bound (inclusive)")
    log: bool = Field(False, description="sample the range on a log scale (learning rates)")
    choices: list[Any] | None = Field(None, description="sample one of these values instead of a range")

    @model_validator(mode="after")
    def _check_shape(self) -> "SearchParam":
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either a non-empty `choices` list or `low` and `high`, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both `low` and `high` (or give `choices`)")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self


def _default_space() -> dict[str, SearchParam]:
    return {"learning_rate": SearchParam(low=2e-5, high=2e-4, log=True),
            "warmup_ratio": SearchParam(choices=[0.0, 0.1])}


class SearchConfig(_Section):
    """Hyperparameter search with Optuna before the final training; off while `trials` is 0."""

    trials: int = Field(0, ge=0, description="Optuna trials, each a nested MLflow run; 0 turns the search off")
    space: dict[str, SearchParam] = Field(
        default_factory=_default_space,
        description="training field -> {low, high, log} or {choices}; e.g. learning_rate: {low: 1e-5, high: 1e-4, log: true}",
    )
    metric: str | None = Field(None, description="validation metric to optimise; default training.metric_for_best_model")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for losses and errors (loss, mse, rmse, mae), else maximize"
    )
    trial_epochs: float | None = Field(None, gt=0, description="epochs per trial; default training.epochs")
    trial_max_rows: int | None = Field(None, gt=0, description="train rows per trial (a stable sample); default all")
    prune: bool = Field(
        True, description="stop a trial early when its validation score after an evaluation is below the median "
                          "of earlier trials at the same evaluation (Optuna's median pruner; in-process trials)"
    )


class ExportConfig(_Section):
    """ONNX export and its checks."""

    enabled: bool = Field(True)
    opset: int = Field(17, ge=11)
    quantize: bool = Field(True, description="also write a dynamic int8 model")
    optimize: bool = Field(False, description="apply ONNX Runtime's transformer graph optimisation")
    parity_atol: float = Field(1e-4, gt=0, description="largest allowed probability (regression: value) difference, "
                               "ONNX through the inference core vs PyTorch, on the test split")
    int8_max_metric_drop: float = Field(0.01, ge=0, description="int8 may lose at most this much of the metric")


class MaxF1Target(_Section):
    """Threshold target: the one that maximises this label's F1 on validation."""

    max_f1: str = Field(description="the positive label, e.g. spam")


class MinPrecisionTarget(_Section):
    """Threshold target: the lowest threshold (most recall) whose precision of `label` on validation is >= this."""

    min_precision: float = Field(gt=0, le=1, description="the precision to reach, e.g. 0.99")
    label: str = Field(description="the positive label, e.g. spam")


def _threshold_form(value: Any) -> str | None:
    """Which form of decision.threshold a value is (None: none of them, so the error lists the forms)."""
    if isinstance(value, (MaxF1Target, MinPrecisionTarget)):
        return type(value).__name__
    if isinstance(value, dict):
        return "MinPrecisionTarget" if "min_precision" in value else "MaxF1Target" if "max_f1" in value else None
    return "number" if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None


ThresholdRule = Annotated[
    Annotated[Annotated[float, Field(gt=0, lt=1)], Tag("number")]
    | Annotated[MaxF1Target, Tag("MaxF1Target")] | Annotated[MinPrecisionTarget, Tag("MinPrecisionTarget")],
    Discriminator(_threshold_form, custom_error_type="threshold_form", custom_error_message=(
        "give a number between 0 and 1, {max_f1: LABEL} or {min_precision: P, label: LABEL}")),
]


class DecisionConfig(_Section):
    """How a classifier's logits become answers: calibration and, for binary classifiers, the threshold.

    Both are fitted on the validation split after training, travel in the serving bundle and are
    applied by every scorer (evaluation, export parity, promotion, batch scoring, the service).
    """

    calibration: Literal["temperature", "none"] = Field(
        "temperature", description="temperature: fit one temperature on validation (NLL), so served "
                                   "probabilities are calibrated; none: plain softmax")
    threshold: ThresholdRule | None = Field(
        None, description="binary classifiers: null (argmax), a number (the second label is positive when its "
                          "probability >= it), {max_f1: LABEL} or {min_precision: 0.99, label: LABEL}")


class RegistryConfig(_Section):
    """Where runs and model versions go."""

    model_name: str = Field("finetune-flow-quickstart",
                            description="registered model name (letters, digits, '.', '_', '-')")
    experiment: str = Field("finetune-flow", description="MLflow experiment of the training runs")
    promotion_margin: float = Field(0.0, ge=0, description="challenger must beat champion by this much")
    promote_with_data_warnings: bool = Field(
        False, description="promote a version whose data passed validation only with warnings (default: refuse)")

    @field_validator("model_name")
    @classmethod
    def _check_model_name(cls, v: str) -> str:
        return check_name(v, "registry.model_name")

    min_shadow_answers: int = Field(0, ge=0, description="promote only after the challenger answered this many "
                                    "real requests in shadow (FTFLOW_SHADOW=challenger); 0: no minimum")


class MonitoringConfig(_Section):
    """The monitor flow: which logged traffic it compares with the champion's data, and when it asks for a retrain."""

    window_hours: float = Field(24.0, gt=0, description="compare the predictions logged in the last N hours")
    min_rows: int = Field(200, ge=10, description="fewer logged rows than this in the window: no drift verdict")
    p_value: float = Field(0.05, gt=0, lt=1, description="family-wise false-alarm rate of the drift tests "
                           "(Bonferroni-split across them)")
    reference_rows: int = Field(1000, ge=50, description="rows of the champion's held-out data used as reference")
    embedding_rows: int = Field(500, ge=50, description="rows per side embedded for the MMD test")
    permutations: int = Field(200, ge=20, description="permutations of the MMD p-value")
    min_feedback_rows: int = Field(30, ge=1, description="feedback rows needed before its accuracy counts")
    min_feedback_accuracy: float = Field(0.7, ge=0, le=1, description="accuracy on rows with feedback below "
                                         "this asks for a retrain (classification)")
    retrain_on_drift: bool = Field(True, description="emit the retrain event when drift or low feedback accuracy "
                                   "is found (the automation of `ftflow up` runs retrain/on-drift)")
    seed: int = Field(0, description="seed of the sampling and permutations")

    @model_validator(mode="after")
    def _check_permutations(self) -> "MonitoringConfig":
        # The smallest permutation p-value is 1/(permutations+1); below the per-test threshold it never fires.
        tests = 5  # length, oov_rate, embedding, prediction, confidence
        needed = int(tests / self.p_value)
        if self.permutations < needed:
            raise ValueError(f"monitoring.permutations {self.permutations} is too few for p_value {self.p_value}: "
                             f"the embedding test could never reach p < {self.p_value / tests:.3g}; use at least {needed}")
        return self


class PipelineConfig(_Section):
    """Everything one fine-tuning run needs."""

    name: str = Field("quickstart", description="name of this configuration; used in run names and run "
                                                "folders (letters, digits, '.', '_', '-')")
    run_dir: str = Field("runs", description="folder holding one sub-folder per run")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
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
    def _check_loss_fits_task(self) -> "PipelineConfig":
        t, task = self.training, self.data.task
        allowed = allowed_losses(task)
        if t.loss not in allowed:
            raise ValueError(f"training.loss '{t.loss}' does not fit data.task '{task}'; allowed: {', '.join(allowed)}")
        if t.focal_alpha is not None and t.class_weights not in (None, "auto"):
            raise ValueError("set training.focal_alpha or training.class_weights, not both (focal alpha is the weight)")
        if task == "regression" and (t.class_weights not in (None, "auto") or t.focal_alpha is not None):
            raise ValueError("training.class_weights / focal_alpha need a classification task, not regression")
        if t.label_smoothing and (task == "regression" or t.loss == "focal"):
            raise ValueError("training.label_smoothing applies to cross-entropy; "
                             f"set it to 0 for {'regression' if task == 'regression' else 'the focal loss'}")
        return self

    @model_validator(mode="after")
    def _check_threshold_fits_task(self) -> "PipelineConfig":
        if self.decision.threshold is not None and self.data.task not in ("classification", "pair_classification"):
            raise ValueError(f"decision.threshold applies to binary classifiers, not data.task '{self.data.task}'; "
                             "set it to null")
        return self

    @model_validator(mode="after")
    def _check_long_text_fits_task(self) -> "PipelineConfig":
        if self.model.long_text == "chunk" and self.data.task not in UNCAPPED_TASKS:
            raise ValueError(f"model.long_text 'chunk' reads long documents for classification and regression, "
                             f"not {self.data.task}; set model.long_text to truncate")
        return self

    @model_validator(mode="after")
    def _check_search_space(self) -> "PipelineConfig":
        searchable = sorted(set(TrainingConfig.model_fields) - {"distributed", "use_cpu", "seed"})
        unknown = [k for k in self.search.space if k not in searchable]
        if unknown:
            raise ValueError(f"search.space has {unknown}, which are not training fields; searchable: "
                             f"{', '.join(searchable)}")
        return self

    def digest(self) -> str:
        """Short content digest of the resolved config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = redact_text(repr(value)) if not isinstance(value, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            # Its value is not repeated: a mistyped `pasword:` would print the password.
            lines.append(f"  - {where}: unknown field; check the spelling")
        else:
            lines.append(f"  - {where} = {shown}: {e['msg']}")
    return "\n".join(lines)


def _parse_value(raw: str) -> Any:
    # YAML rules give numbers, booleans, null and lists from the command line.
    return yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides onto a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value, e.g. --set training.epochs=2")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML preset (or the defaults), apply overrides, validate."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists():
            presets = sorted(x.stem for x in Path(__file__).resolve().parent.parent.joinpath("configs").glob("*.yaml"))
            raise ConfigError(f"config file '{path}' does not exist; presets in configs/: {', '.join(presets)}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
        origin = str(path)
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None


def flatten_config(cfg: PipelineConfig) -> dict[str, Any]:
    """`section.key -> value` pairs, for logging as run parameters."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return out
