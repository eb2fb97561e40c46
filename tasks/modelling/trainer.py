"""The Trainer: our loss and optimiser in a Trainer subclass, class weights, and its arguments from the config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.kinds import kind_of
from tasks.modelling.checkpoints import CHECKPOINTS
from tasks.modelling.precision import pick_precision

log = logging.getLogger(__name__)


def make_trainer_class():
    """A Trainer whose loss and optimiser follow the config (built lazily: transformers is heavy)."""
    # heavy (torch, transformers): loaded when this runs, so importing tasks.modelling.trainer stays light
    import torch
    from transformers import Trainer

    from tasks.modelling.losses import compute_loss

    class PipelineTrainer(Trainer):
        # compute_loss below scales for gradient accumulation itself; the Trainer must not divide again.
        loss_is_scaled_for_ga = True

        def __init__(self, *args, loss_spec: dict, optimizer_name: str, keep_eval_order: bool = False, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_spec = loss_spec
            self.optimizer_name = optimizer_name
            self.keep_eval_order = keep_eval_order

        def _get_eval_sampler(self, eval_dataset):
            # group_by_length also reorders evaluation; windows are aggregated per document by position.
            if self.keep_eval_order:  # DDP (None): each rank's batches, gathered back in order
                return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
            return super()._get_eval_sampler(eval_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = self.scaled_loss(outputs.logits, labels, num_items_in_batch, model.training)
            return (loss, outputs) if return_outputs else loss

        def scaled_loss(self, logits, labels, num_items_in_batch, training: bool):
            """This micro-batch's share of the loss of its whole gradient-accumulation window.

            Unweighted losses: the sum over this micro-batch divided by the scored items
            (examples, or labelled tokens for NER) of the whole window, so the window's loss is
            the exact mean over its items, however they spread over micro-batches. Weighted
            losses (class weights, focal alpha) normalise by summed weights, which only this
            micro-batch knows: its weighted mean divided by the number of micro-batches.
            """
            spec = self.loss_spec
            weighted = spec["class_weights"] is not None or spec["alpha"] is not None
            if training and num_items_in_batch is not None and not weighted:
                total = compute_loss(logits=logits, labels=labels, reduction="sum", **spec)
                return total / num_items_in_batch
            loss = compute_loss(logits=logits, labels=labels, **spec)
            return loss / self.current_gradient_accumulation_steps if training else loss

        def create_optimizer(self, model=None):
            if self.optimizer_name != "adam" or self.optimizer is not None:
                return super().create_optimizer(model) if model is not None else super().create_optimizer()
            model = model or self.model
            decay = set(self.get_decay_parameter_names(model))
            params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            groups = [
                {"params": [p for n, p in params if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
            ]
            # Plain Adam: weight decay is the classic L2 term, coupled to the gradient.
            self.optimizer = torch.optim.Adam(
                groups,
                lr=self.args.learning_rate,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
            return self.optimizer

    return PipelineTrainer


AUTO_BALANCE_RATIO = 5  # class_weights auto: balance when the largest class has this many times the smallest's rows


def class_skew(train_labels: list[int], num_labels: int) -> float:
    """Rows of the largest train class per row of the smallest (a class without rows counts as one)."""
    # heavy (numpy): loaded when this runs, so importing tasks.modelling.trainer stays light
    import numpy as np

    ids = np.asarray(train_labels, dtype=np.int64).reshape(-1)
    counts = np.bincount(ids[ids >= 0], minlength=num_labels)
    return float(counts.max() / max(counts.min(), 1))


def resolve_class_weights(cfg: PipelineConfig, train_labels: list[int], num_labels: int):
    """Per-class loss weights in label order, or None.

    auto: balanced for single-label classifiers whose classes are skewed 5:1 or more (a rare class
    is otherwise never predicted); for multi-label models, positive weights (negatives / positives per
    label) when a label is 5 times rarer than its absence; none for NER, where "O" outnumbers every entity tag by design,
    and none when focal_alpha already weighs the classes.
    """
    # heavy (torch via tasks.modelling.losses): loaded when this runs, so importing tasks.modelling.trainer stays light
    from tasks.modelling.losses import balanced_class_weights, label_skew, positive_weights

    weights = cfg.training.class_weights
    if kind_of(cfg.data.task).is_multi_label:
        # Per-label positive weights (BCE's pos_weight): the same question, asked of each label against its absence.
        if weights == "auto" and cfg.training.focal_alpha is None:
            skew = label_skew(train_labels)
            weights = "balanced" if skew >= AUTO_BALANCE_RATIO else None
            if weights:
                log.info(
                    "label weights: balanced (training.class_weights auto: a label is %.1fx rarer than its absence)",
                    skew,
                )
        elif weights == "auto":
            weights = None
        if weights == "balanced":
            return positive_weights(train_labels)
    elif weights == "auto":
        skew = (
            class_skew(train_labels, num_labels)
            if kind_of(cfg.data.task).skew_weighted and cfg.training.focal_alpha is None
            else 0
        )
        weights = "balanced" if skew >= AUTO_BALANCE_RATIO else None
        if weights:
            log.info(
                "class weights: balanced (training.class_weights auto: the largest train class has %.1fx "
                "the rows of the smallest)",
                skew,
            )
    if weights == "balanced":
        return balanced_class_weights(train_labels, num_labels)
    if weights is not None and len(weights) != num_labels:
        raise ValueError(
            f"training.class_weights has {len(weights)} values but the task has {num_labels} labels; "
            "give one weight per label, in label order, 'balanced' or 'auto'"
        )
    return weights


def training_arguments(cfg: PipelineConfig, run_dir: Path, checkpoints: bool = True):
    """The Trainer's arguments from our config: schedule, precision, evaluation, checkpoints, DDP.

    checkpoints=False (search trials): evaluate and track the best metric, but save nothing.
    """
    # heavy (torch, transformers; numpy via tasks.modelling.metrics): loaded when this runs, so importing tasks.modelling.trainer stays light
    import torch
    from transformers import TrainingArguments

    from tasks.modelling.metrics import greater_is_better, primary_metric

    tc = cfg.training
    best_metric = tc.metric_for_best_model or primary_metric(cfg.data.task)
    strategy = "steps" if tc.eval_steps else "epoch"
    # Under torchrun without GPUs, accelerate forms a gloo process group only when told "cpu";
    # otherwise every rank silently trains alone (world size 1).
    cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    precision = pick_precision(tc.mixed_precision, tc.use_cpu)
    # The Trainer refuses bf16 without a GPU unless told the device is the CPU (autocast on CPU).
    cpu_bf16 = precision["bf16"] and (tc.use_cpu or not torch.cuda.is_available())
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=tc.train_batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
        lr_scheduler_type=tc.scheduler if tc.scheduler != "constant" else "constant_with_warmup",
        optim="adamw_torch_fused",  # fused: the single-tensor AdamW is ~3x slower on CPU; "adam" is built below
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        max_grad_norm=tc.max_grad_norm,
        seed=tc.seed,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        length_column_name="length",
        eval_strategy=strategy,
        save_strategy=strategy if checkpoints else "no",
        eval_steps=tc.eval_steps,
        # None only with save_strategy epoch or no, where transformers never reads save_steps.
        save_steps=tc.eval_steps,  # type: ignore[arg-type]  # transformers types it float (default 500), not Optional
        logging_steps=tc.logging_steps,
        save_total_limit=tc.save_total_limit,
        load_best_model_at_end=checkpoints,  # the best checkpoint is never rotated out
        metric_for_best_model=best_metric,
        greater_is_better=greater_is_better(best_metric),
        report_to="none",  # our callback logs into the flow's run; the built-in one would open its own
        disable_tqdm=True,
        use_cpu=tc.use_cpu or cpu_ddp or cpu_bf16,
        ddp_backend="gloo" if cpu_ddp else None,
        activation_checkpointing=tc.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available() and not tc.use_cpu,
        dataloader_num_workers=0,
        # Per-rank mean loss; averaging token counts across devices scales the loss by world size.
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,
        **precision,
    )


def loss_spec_for(cfg: PipelineConfig, labels: list[str] | None, train_label_ids) -> dict:
    """Arguments of tasks.modelling.losses.compute_loss for this config (class weights resolved)."""
    # heavy (torch via tasks.modelling.losses): loaded when this runs, so importing tasks.modelling.trainer stays light
    from tasks.modelling.losses import resolve_loss_name

    tc, task = cfg.training, cfg.data.task
    class_weights = None
    if kind_of(task).has_labels:
        assert labels is not None, "classification and NER have a label set (None only for regression)"
        class_weights = resolve_class_weights(cfg, train_label_ids, len(labels))
    return {
        "task": task,
        "loss_name": resolve_loss_name(task, tc.loss),
        "class_weights": class_weights,
        "gamma": tc.focal_gamma,
        "alpha": tc.focal_alpha,
        "label_smoothing": tc.label_smoothing,
    }
