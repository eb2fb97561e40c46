"""The model: the checkpoint to fine-tune (`model`), its ONNX export (`export`) and how it decides (`decision`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from tasks.config.base import Section


class ModelConfig(Section):
    """The pretrained checkpoint to fine-tune."""

    name: str = Field(
        "minilm",
        description="hub id (e.g. bert-base-uncased), local folder, or 'minilm' for the packaged offline MiniLM",
    )
    revision: str | None = Field(None, description="hub revision to pin")
    max_length: Annotated[int, Field(ge=8, le=4096)] | Literal["auto"] = Field(
        "auto",
        description="longest tokenised input; longer is truncated (or chunked). auto: the 98th percentile "
        "of the train split's token lengths, rounded up to a multiple of 8, at least 32, at most the "
        "model's positions and 512; training logs what it chose and how many train texts it cuts, and "
        "the model folder records the number, which evaluation, export and serving read",
    )
    head_init: Literal["random", "probe"] = Field(
        "random",
        description="the new head's first weights: random, or probe (a linear model fitted on the pretrained "
        "body's pooled train rows, its regularisation cross-validated; sequence tasks only)",
    )
    blend: Literal["off", "auto"] = Field(
        "off",
        description="auto: when the bag-of-words baseline helps on validation, serve a blend of both models' "
        "probabilities (the weight with the lowest validation log loss; the baseline exported to ONNX and run "
        "by the same inference core); single-text, single-label classification with baselines.kinds holding "
        "bag_of_words. off: the model alone",
    )
    label_all_subtokens: bool = Field(False, description="NER: label every sub-token, not only the first")
    long_text: Literal["truncate", "chunk"] = Field(
        "truncate",
        description="texts longer than max_length tokens: truncate (read the start only) or chunk "
        "(windows of max_length tokens; a document's answer aggregates its windows' logits)",
    )
    stride: int | None = Field(
        None, ge=0, description="chunk: tokens shared by consecutive windows; empty: max_length // 4"
    )
    aggregate: Literal["mean", "max"] = Field(
        "mean", description="chunk: a document's logits are the mean or the max of its windows' logits"
    )

    def window_stride(self) -> int:
        """The overlap of consecutive windows in tokens (the configured stride, else max_length // 4)."""
        return self.length() // 4 if self.stride is None else self.stride

    def length(self) -> int:
        """max_length as a number of tokens; 'auto' must have been resolved first (training records it)."""
        if self.max_length == "auto":
            raise ValueError("model.max_length is still 'auto': resolve it first (tasks.modelling.sizing)")
        return self.max_length

    @model_validator(mode="after")
    def _check_stride(self) -> ModelConfig:
        if self.max_length == "auto":  # auto picks at least twice the stride (tasks.modelling.sizing)
            return self
        if self.window_stride() > self.max_length // 2:
            raise ValueError(
                f"model.stride = {self.stride} is more than half of model.max_length "
                f"({self.max_length}); windows would mostly repeat each other: use at most "
                f"{self.max_length // 2}"
            )
        return self


class ExportConfig(Section):
    """ONNX export and its checks."""

    enabled: bool = Field(True, description="export the model to ONNX (needed to register and serve it)")
    opset: int = Field(17, ge=11, description="ONNX opset of the exported graph")
    quantize: bool = Field(True, description="also write a dynamic int8 model")
    optimize: bool = Field(False, description="apply ONNX Runtime's transformer graph optimisation")
    parity_atol: float = Field(
        1e-4,
        gt=0,
        description="largest allowed probability (regression: value) difference, "
        "ONNX through the inference core vs PyTorch, on the test split",
    )
    int8_max_metric_drop: float = Field(0.01, ge=0, description="int8 may lose at most this much of the metric")


class MaxF1Target(Section):
    """Threshold target: the one that maximises this label's F1 on validation."""

    max_f1: str = Field(description="the positive label, e.g. spam")


class MinPrecisionTarget(Section):
    """Threshold target: the lowest threshold (most recall) whose precision of `label` on validation is >= this."""

    min_precision: float = Field(gt=0, le=1, description="the precision to reach, e.g. 0.99")
    label: str | None = Field(
        None, description="the positive label, e.g. spam (binary classifiers need it; multi_label: none = every label)"
    )


def _threshold_form(value: Any) -> str | None:
    """Which form of decision.threshold a value is (None: none of them, so the error lists the forms)."""
    if isinstance(value, (MaxF1Target, MinPrecisionTarget)):
        return type(value).__name__
    if isinstance(value, dict):
        return "MinPrecisionTarget" if "min_precision" in value else "MaxF1Target" if "max_f1" in value else None
    return "number" if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None


ThresholdRule = Annotated[
    Annotated[Annotated[float, Field(gt=0, lt=1)], Tag("number")]
    | Annotated[MaxF1Target, Tag("MaxF1Target")]
    | Annotated[MinPrecisionTarget, Tag("MinPrecisionTarget")],
    Discriminator(
        _threshold_form,
        custom_error_type="threshold_form",
        custom_error_message=("give a number between 0 and 1, {max_f1: LABEL} or {min_precision: P, label: LABEL}"),
    ),
]


class DecisionConfig(Section):
    """How a classifier's logits become answers: calibration and, for binary classifiers, the threshold.

    Both are fitted on the validation split after training, travel in the serving bundle and are
    applied by every scorer (evaluation, export parity, promotion, batch scoring, the service).
    """

    calibration: Literal["temperature", "none"] = Field(
        "temperature",
        description="temperature: fit one temperature on validation (NLL), so served "
        "probabilities are calibrated (multi_label: a scale and a bias per label, Platt scaling); none: plain "
        "softmax (sigmoid)",
    )
    threshold: ThresholdRule | None = Field(
        None,
        description="binary classifiers: null (argmax), a number (the second label is positive when its "
        "probability >= it), {max_f1: LABEL} or {min_precision: 0.99, label: LABEL}; multi_label: null "
        "(each label's best F1 on validation), a number (every label) or {min_precision: 0.9} (each label, "
        "or only `label`)",
    )
