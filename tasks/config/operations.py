"""After training: where versions go and how they are promoted (`registry`), how the champion is watched
(`monitoring`).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from tasks.config.base import Section, check_name


class RegistryConfig(Section):
    """Where runs and model versions go."""

    model_name: str = Field(
        "finetune-flow-quickstart", description="registered model name (letters, digits, '.', '_', '-')"
    )
    experiment: str = Field("finetune-flow", description="MLflow experiment of the training runs")
    promotion_margin: float = Field(0.0, ge=0, description="challenger must beat champion by this much")
    allow_below_baseline: bool = Field(
        False,
        description="promote a version that did not beat the best baseline on its test split beyond the interval "
        "(tag beats_baseline=false); default: refuse",
    )
    promote_with_data_warnings: bool = Field(
        False, description="promote a version whose data passed validation only with warnings (default: refuse)"
    )

    @field_validator("model_name")
    @classmethod
    def _check_model_name(cls, v: str) -> str:
        return check_name(v, "registry.model_name")

    training_wait_minutes: float = Field(
        360.0,
        ge=0,
        description="a nightly or retrain of this model waits this long while another one trains it (one "
        "training per model at a time, across processes and machines), then ends Cancelled; 0: do not wait",
    )

    min_shadow_answers: int = Field(
        0,
        ge=0,
        description="promote only after the challenger answered this many "
        "real requests in shadow (FTFLOW_SHADOW=challenger); 0: no minimum",
    )


class MonitoringConfig(Section):
    """The monitor flow: which logged traffic it compares with the champion's data, and when it asks for a retrain."""

    window_hours: float = Field(24.0, gt=0, description="compare the predictions logged in the last N hours")
    min_rows: int = Field(200, ge=10, description="fewer logged rows than this in the window: no drift verdict")
    p_value: float = Field(
        0.05, gt=0, lt=1, description="family-wise false-alarm rate of the drift tests (Bonferroni-split across them)"
    )
    reference_rows: int = Field(1000, ge=50, description="rows of the champion's held-out data used as reference")
    embedding_rows: int = Field(500, ge=50, description="rows per side embedded for the MMD test")
    permutations: int = Field(200, ge=20, description="permutations of the MMD p-value")
    min_feedback_rows: int = Field(30, ge=1, description="feedback rows needed before its accuracy counts")
    min_feedback_accuracy: float = Field(
        0.7, ge=0, le=1, description="accuracy on rows with feedback below this asks for a retrain (classification)"
    )
    retrain_on_drift: bool = Field(
        True,
        description="emit the retrain event when drift or low feedback accuracy "
        "is found (the automation of `ftflow up` runs retrain/on-drift)",
    )
    retrain_cooldown_hours: float = Field(
        12.0,
        ge=0,
        description="a retrain of a model that began retraining less than this many hours ago is refused "
        "(Cancelled, naming when it may run) unless run with force=true; 0: no cooldown",
    )
    seed: int = Field(0, description="seed of the sampling and permutations")

    @model_validator(mode="after")
    def _check_permutations(self) -> MonitoringConfig:
        # The smallest permutation p-value is 1/(permutations+1); below the per-test threshold it never fires.
        tests = 5  # length, oov_rate, embedding, prediction, confidence
        needed = int(tests / self.p_value)
        if self.permutations < needed:
            raise ValueError(
                f"monitoring.permutations {self.permutations} is too few for p_value {self.p_value}: "
                f"the embedding test could never reach p < {self.p_value / tests:.3g}; use at least {needed}"
            )
        return self
