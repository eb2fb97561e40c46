"""Train: fine-tune a pretrained checkpoint with the Hugging Face Trainer.

`train_model` is the stage. It runs `fit` in this process, or launches the same
`fit` under `torchrun` when `training.distributed.nproc_per_node > 1`
(`python -m tasks.train SPEC.json` is the worker's entry point). Checkpoints go to
`RUN/checkpoints`; a re-run of the same run folder resumes from the last one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.io import read_frame, write_json

CHECKPOINTS = "checkpoints"
MODEL = "model"


def pick_precision(mode: str, use_cpu: bool) -> dict[str, bool]:
    """bf16 on GPUs that support it, else fp16; full precision on CPU."""
    import torch

    if mode == "no" or use_cpu or not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def default_best_metric(task: str) -> str:
    from tasks.metrics import primary_metric

    return primary_metric(task)


def build_model(cfg: PipelineConfig, labels: list[str] | None):
    """Load the pretrained body with a fresh head sized for the task."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from tasks.encode import ModelSourceError, resolve_model_path

    path = resolve_model_path(cfg.model.name)
    task = cfg.data.task
    kwargs: dict = {"revision": cfg.model.revision}
    if task == "regression":
        kwargs.update(num_labels=1, problem_type="regression")
    else:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
        if task != "ner":
            kwargs["problem_type"] = "single_label_classification"
    cls = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    try:
        return cls.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelSourceError(f"cannot load model '{cfg.model.name}': {e}") from None


def build_datasets(tokenizer, data: dict, cfg: PipelineConfig) -> dict:
    """Encode the clean splits into `datasets.Dataset`s with a length column for grouping."""
    from datasets import Dataset

    from tasks.encode import encode_frame

    out = {}
    for split in ("train", "validation"):
        df = read_frame(data["splits"][split])
        enc = encode_frame(tokenizer, df, cfg.data.task, data["labels"], cfg.model.max_length,
                           cfg.training.pad_to_max_length, cfg.model.label_all_subtokens)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        out[split] = Dataset.from_dict(enc)
    return out


def make_trainer_class():
    """A Trainer whose loss and optimiser follow the config (built lazily: transformers is heavy)."""
    import torch
    from transformers import Trainer

    from tasks.losses import compute_loss

    class PipelineTrainer(Trainer):
        def __init__(self, *args, loss_spec: dict, optimizer_name: str, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_spec = loss_spec
            self.optimizer_name = optimizer_name

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            loss = compute_loss(logits=outputs.logits, labels=labels, **self.loss_spec)
            return (loss, outputs) if return_outputs else loss

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
            self.optimizer = torch.optim.Adam(groups, lr=self.args.learning_rate,
                                              betas=(self.args.adam_beta1, self.args.adam_beta2),
                                              eps=self.args.adam_epsilon)
            return self.optimizer

    return PipelineTrainer


def make_tracking_callback(run_id: str | None):
    """A callback that logs the Trainer's history into our run (rank 0 only), never a run of its own."""
    from transformers import TrainerCallback

    from tasks import tracking

    class TrackingCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not run_id or not state.is_world_process_zero or not logs:
                return
            renamed = {}
            for k, v in logs.items():
                if k in ("epoch", "total_flos") or not isinstance(v, (int, float)):
                    continue
                name = k if k.startswith("eval_") else f"train_{k}" if k in ("loss", "grad_norm") else k
                renamed[name.replace("eval_", "val_", 1)] = v
            renamed["epoch"] = state.epoch or 0.0
            tracking.log_metrics(run_id, renamed, step=state.global_step)

    return TrackingCallback()


def resolve_class_weights(cfg: PipelineConfig, train_labels: list[int], num_labels: int):
    from tasks.losses import balanced_class_weights

    weights = cfg.training.class_weights
    if weights == "balanced":
        return balanced_class_weights(train_labels, num_labels)
    if weights is not None and len(weights) != num_labels:
        raise ValueError(
            f"training.class_weights has {len(weights)} values but the task has {num_labels} labels; "
            "give one weight per label, in label order, or 'balanced'"
        )
    return weights


def last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def fit(spec: dict) -> dict:
    """Run the Trainer on one process (or one rank of torchrun); the worker side of `train_model`."""
    import torch
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, EarlyStoppingCallback
    from transformers import TrainingArguments

    from tasks.encode import load_tokenizer, resolve_model_path
    from tasks.losses import resolve_loss_name
    from tasks.metrics import greater_is_better, make_trainer_compute_metrics

    cfg = PipelineConfig.model_validate(spec["config"])
    data, run_dir = spec["data"], Path(spec["run_dir"])
    tc, task = cfg.training, cfg.data.task
    labels = data["labels"]
    torch.manual_seed(tc.seed)

    tokenizer = load_tokenizer(resolve_model_path(cfg.model.name), cfg.model.revision)
    datasets = build_datasets(tokenizer, data, cfg)
    model = build_model(cfg, labels)
    if task == "ner":
        collator = DataCollatorForTokenClassification(tokenizer)
    else:
        collator = DataCollatorWithPadding(tokenizer)

    best_metric = tc.metric_for_best_model or default_best_metric(task)
    strategy = "steps" if tc.eval_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=tc.train_batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,  # transformers 5: a float below 1 is a ratio of total steps
        lr_scheduler_type=tc.scheduler if tc.scheduler != "constant" else "constant_with_warmup",
        optim="adamw_torch",
        gradient_accumulation_steps=tc.gradient_accumulation_steps,
        max_grad_norm=tc.max_grad_norm,
        seed=tc.seed,
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        length_column_name="length",
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=tc.eval_steps,
        save_steps=tc.eval_steps,
        logging_steps=tc.logging_steps,
        save_total_limit=tc.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=best_metric,
        greater_is_better=greater_is_better(best_metric),
        report_to="none",  # our callback logs into the flow's run; the built-in one would open its own
        disable_tqdm=True,
        use_cpu=tc.use_cpu,
        activation_checkpointing=tc.gradient_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available() and not tc.use_cpu,
        dataloader_num_workers=0,
        # Per-rank mean loss; averaging token counts across devices scales the loss by world size.
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,
        **pick_precision(tc.mixed_precision, tc.use_cpu),
    )
    train_ids = [] if task == "regression" else datasets["train"]["labels"]  # NER: nested, -100 skipped
    loss_spec = {
        "task": task,
        "loss_name": resolve_loss_name(task, tc.loss),
        "class_weights": None if task == "regression" else resolve_class_weights(cfg, train_ids, len(labels)),
        "gamma": tc.focal_gamma,
        "alpha": tc.focal_alpha,
    }
    callbacks = [make_tracking_callback(spec.get("run_id"))]
    if tc.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    trainer = make_trainer_class()(
        model=model, args=args, train_dataset=datasets["train"], eval_dataset=datasets["validation"],
        data_collator=collator, processing_class=tokenizer,
        compute_metrics=make_trainer_compute_metrics(task, labels),
        callbacks=callbacks, loss_spec=loss_spec, optimizer_name=tc.optimizer,
    )
    resume = last_checkpoint(run_dir / CHECKPOINTS)
    result = trainer.train(resume_from_checkpoint=resume)
    summary = {
        "resumed_from": resume,
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "metric_for_best_model": best_metric,
        "world_size": trainer.args.world_size,
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        model_dir = run_dir / MODEL
        trainer.save_model(str(model_dir))  # the best checkpoint, loaded at the end
        tokenizer.save_pretrained(str(model_dir))
        write_json(model_dir / "finetune_flow.json", {
            "task": task, "labels": labels, "max_length": cfg.model.max_length,
            "base_model": cfg.model.name, "config_digest": cfg.digest(), "data_digest": data["digest"],
        })
        write_json(run_dir / "train_summary.json", summary)
    return summary


def launch_distributed(spec_path: Path, nproc: int) -> None:
    """Run `fit` under torchrun with N processes (gloo on CPU, nccl on GPUs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--standalone", "-m", "tasks.train", str(spec_path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (torchrun exit {proc.returncode}); its output is above. "
            f"Checkpoints so far are kept in {spec_path.parent / CHECKPOINTS}; re-run to resume."
        )


def train_model(data: dict, cfg: PipelineConfig, run_dir: str | Path, run_id: str | None = None) -> dict:
    """Fine-tune on the clean splits; return the model folder and the training summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"config": cfg.model_dump(mode="json"), "data": data, "run_dir": str(run_dir), "run_id": run_id}
    nproc = cfg.training.distributed.nproc_per_node
    if nproc > 1:
        spec_path = Path(write_json(run_dir / "train_spec.json", spec))
        launch_distributed(spec_path, nproc)
        summary = json.loads((run_dir / "train_summary.json").read_text())
    else:
        summary = fit(spec)
    summary.pop("log_history", None)
    return {"model_dir": str(run_dir / MODEL), "summary": summary}


if __name__ == "__main__":  # torchrun worker: python -m tasks.train SPEC.json
    fit(json.loads(Path(sys.argv[1]).read_text()))
