"""Training hyperparameters (`training`) and the hyperparameter search over them (`search`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from tasks.config.base import Section
from tasks.secrets import redact_url, warn_literal_credentials


class DistributedConfig(Section):
    nproc_per_node: int = Field(1, ge=1, description="processes for data-parallel training (torchrun)")


class ContrastiveConfig(Section):
    """The first phase of `strategy: contrastive` (SetFit-style): the body learns from pairs drawn from the labels."""

    pairs_per_row: int = Field(
        40, ge=1, description="pairs drawn per train row: half with a row of its class, half with another class"
    )
    max_pairs: int = Field(8000, ge=2, description="at most this many pairs in all (bounds the phase on larger sets)")
    learning_rate: float = Field(
        1e-4,
        gt=0,
        description="peak learning rate of the contrastive phase (2e-5, SetFit's, moved the MiniLM's head input "
        "too little in a few hundred updates: cosine loss 0.244 -> 0.241 on TREC at 8 rows a class; 1e-4: 0.026)",
    )
    batch_size: int = Field(16, ge=2, description="pairs per optimizer update")
    max_length: int = Field(
        128,
        ge=8,
        description="the phase reads at most this many tokens of a row (its start and closing token): long "
        "documents learn their classes from their openings at a fraction of the cost",
    )
    auto_rows_per_class: int = Field(
        64,
        ge=0,
        description="strategy auto takes contrastive when the median class has at most this many train rows",
    )
    max_seconds: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="the phase's time budget: after its first updates it measures their pace on this machine and "
        "keeps only the updates that fit (the learning rate then decays to the new end); auto: 600 on a CPU, none "
        "on a GPU; empty: no limit (the token budget and max_pairs still bound it)",
    )


class TrainingConfig(Section):
    """Hyperparameters; the defaults suit the offline MiniLM on a few CPU cores."""

    strategy: Literal["auto", "fine_tune", "contrastive"] = Field(
        "auto",
        description="fine_tune: the body and a new head train together on the labels. contrastive (few rows per "
        "class; single-label classification): first the body learns to place texts of one class together "
        "and texts of different classes apart (cosine loss on pairs drawn from the labels), then the head "
        "starts from a linear probe on that body (model.head_init probe) and fine-tuning runs as usual. "
        "auto: contrastive for single-label classification whose train split has at most "
        "contrastive.auto_rows_per_class rows in its median class, else fine_tune; the run says which",
    )
    contrastive: ContrastiveConfig = Field(default_factory=ContrastiveConfig)

    learning_rate: float = Field(5e-5, gt=0, description="peak learning rate")
    train_batch_size: int = Field(32, ge=1, description="examples per device per step")
    eval_batch_size: int = Field(64, ge=1, description="examples per device at evaluation")
    epochs: float = Field(
        3.0, gt=0, description="passes over train; more when they give fewer than min_updates optimizer updates"
    )
    min_updates: int = Field(
        300,
        ge=0,
        description="the fewest optimizer updates a run makes: when `epochs` over the train split give fewer, "
        "training runs more epochs (at most max_epochs_auto), evaluates evaluations_auto times over the run "
        "(unless eval_steps is set), stops early after 3 evaluations without a better primary metric (unless "
        "early_stopping_patience is set) and keeps the best checkpoint. 300: a fresh head and the body need a "
        "few hundred updates (a 7-class set of 484 rows got 0.69 accuracy after ~48); train splits of 10k+ "
        "rows reach it within 1 epoch and are unchanged. 0 turns the floor off; max_steps > 0 overrides it",
    )
    max_epochs_auto: float = Field(
        50.0, gt=0, description="min_updates raises the epochs to at most this, so a tiny train split ends"
    )
    auto_token_budget: int | Literal["auto"] = Field(
        "auto",
        description="the most tokens the data-fitted additions train on: the epochs min_updates adds, and the "
        "contrastive phase's pairs, each stop there and the run says so (long documents at 512 tokens would "
        "otherwise train for an hour on a CPU). auto: 1,000,000 on a CPU (minutes on 2 cores), 50,000,000 on a GPU",
    )
    evaluations_auto: int = Field(
        10,
        ge=1,
        description="when min_updates raised the epochs and eval_steps is empty: evaluate (and checkpoint) "
        "about this many times over the run, steps-based",
    )
    max_steps: int = Field(-1, description="stop after this many steps; -1 to use epochs")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps for linear warm-up")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="learning-rate schedule")
    optimizer: Literal["adamw", "adam"] = Field("adamw", description="adamw (default) or adam")
    loss: Literal["auto", "cross_entropy", "mse", "focal"] = Field(
        "auto", description="auto picks cross_entropy for classification/NER and mse for regression"
    )
    class_weights: list[float] | Literal["auto", "balanced"] | None = Field(
        "auto",
        description="cross-entropy/focal class weights, 'balanced', or auto: balanced when the largest "
        "train class has at least 5x the rows of the smallest, else none",
    )
    focal_gamma: float = Field(2.0, ge=0, description="focal loss focusing parameter")
    focal_alpha: list[float] | None = Field(None, description="focal loss per-class alpha")
    label_smoothing: float = Field(
        0.0, ge=0, lt=1, description="cross-entropy against (1 - e) one-hot + e uniform targets; 0 turns it off"
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="batches whose gradients add up to one optimizer update (a larger effective batch)"
    )
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping; 0 disables")
    seed: int = Field(42, description="seed of the head's initial weights, data order and dropout")
    group_by_length: bool = Field(True, description="batch examples of similar length (less padding)")
    pad_to_max_length: bool = Field(False, description="pad every example to max_length (the old recipe)")
    mixed_precision: Literal["auto", "fp32", "no", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast where the device runs it natively (GPUs from Ampere on; CPUs "
        "with AMX-BF16 or AVX512-BF16), else fp16 on GPUs and fp32 on CPUs; fp32 (or no) "
        "turns it off. Weights stay fp32",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% more time"
    )
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="stop after this many evaluations without improvement; empty: off, or 3 when min_updates "
        "raised the epochs",
    )
    metric_for_best_model: str | None = Field(
        None,
        description="default: f1 (classification: the positive class's F1 with two labels, macro-F1 with "
        "more), pearson (regression), f1 (ner)",
    )
    logging_steps: int = Field(20, ge=1, description="log the training loss every N optimizer updates")
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="evaluate every N steps; when empty, per epoch (or evaluations_auto times when min_updates "
        "raised the epochs)",
    )
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept on disk (the best one is never rotated out)")
    use_cpu: bool = Field(False, description="train on CPU even when a GPU is present")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)


class SearchParam(Section):
    """One dimension of the search space: a range (low, high, optional log scale) or a list of choices."""

    low: float | None = Field(None, description="lower bound (inclusive)")
    high: float | None = Field(None, description="upper bound (inclusive)")
    log: bool = Field(False, description="sample the range on a log scale (learning rates)")
    choices: list[Any] | None = Field(None, description="sample one of these values instead of a range")

    @model_validator(mode="after")
    def _check_shape(self) -> SearchParam:
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
    return {
        "learning_rate": SearchParam(low=2e-5, high=2e-4, log=True),
        "warmup_ratio": SearchParam(choices=[0.0, 0.1]),
    }


class SearchConfig(Section):
    """Hyperparameter search with Optuna before the final training; off while `trials` is 0."""

    trials: int = Field(0, ge=0, description="Optuna trials, each a nested MLflow run; 0 turns the search off")
    space: dict[str, SearchParam] = Field(
        default_factory=_default_space,
        description="training field -> {low, high, log} or {choices}; e.g. learning_rate: {low: 1e-5, high: 1e-4, log: true}",
    )
    metric: str | None = Field(
        None, description="validation metric to optimise; default training.metric_for_best_model"
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: minimize for losses and errors (loss, mse, rmse, mae), else maximize"
    )
    trial_epochs: float | None = Field(None, gt=0, description="epochs per trial; default training.epochs")
    trial_max_rows: int | None = Field(None, gt=0, description="train rows per trial (a stable sample); default all")
    prune: bool = Field(
        True,
        description="stop a trial early when its validation score after an evaluation is below the median "
        "of earlier trials at the same evaluation (Optuna's median pruner; trials on every optimizer of a "
        "shared study count)",
    )
    storage: str | None = Field(
        None,
        description="SQLAlchemy URL of the database that holds the study, e.g. the team database "
        "postgresql://ftflow:${PG_PASSWORD}@db:5432/optuna (postgresql:// uses the psycopg driver); put the "
        "password in a ${ENV_NAME} reference, expanded only where the study opens (a literal one is masked in "
        "the flow runs' parameters, so other workers could not open it). The study is named after the training "
        "run's MLflow run, so a resumed run continues its study and other runs never mix with it; trials whose "
        "optimizer stops answering (a worker died) are failed after a heartbeat grace and retried. Empty: "
        "RUN/search/optuna.db, one optimizer",
    )
    parallel: int = Field(
        1,
        ge=1,
        description="optimizers that run trials of the study at once, sharing search.storage (required above 1). "
        "The training run is one of them; under a deployment on a work pool (`ftflow up --workers N`) the others "
        "are flow runs of the search-trials/trials deployment, which any worker picks up (the clean splits "
        "travel through the run's MLflow artifacts, search/data/), else local processes on this machine, each "
        "given its share of the cores. Together they stop at exactly `trials` finished trials",
    )

    @field_validator("storage")
    @classmethod
    def _warn_literal_credentials(cls, v: str | None) -> str | None:
        if v:
            warn_literal_credentials("search.storage", v)
        return v

    # Every written copy of the config (config.yaml, params, flow-run parameters) masks a literal password.
    @field_serializer("storage")
    def _mask_credentials(self, v: str | None) -> str | None:
        return redact_url(v) if v else v

    @model_validator(mode="after")
    def _check_parallel(self) -> SearchConfig:
        if self.parallel > 1 and not self.storage:
            raise ValueError(
                f"search.parallel {self.parallel} runs optimizers in several processes, which share one study "
                "through a database: set search.storage (e.g. postgresql://ftflow:${PG_PASSWORD}@db:5432/optuna, "
                "or sqlite:///search.db on one machine), or set search.parallel to 1"
            )
        return self
