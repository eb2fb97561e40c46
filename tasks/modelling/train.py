"""Train: fine-tune a pretrained checkpoint with the Hugging Face Trainer.

`train_model` is the stage. It runs `fit` in this process, or launches the same
`fit` under `torchrun` when `training.distributed.nproc_per_node > 1`
(`python -m tasks.modelling.train SPEC.json` is the worker's entry point; gloo on CPU, one
process per GPU; rank 0 alone logs and saves). Checkpoints go to `RUN/checkpoints`; a
re-run of the same run folder (a Prefect retry, `fine_tune(resume_from=RUN)`, or a
plain second call) resumes from the last complete one, and refuses when the data or
the model changed. The loss is ours (tasks.modelling.losses), scaled so that gradient
accumulation and DDP average over examples exactly as one large batch would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from tasks.config import PipelineConfig
from tasks.inference.windows import aggregate_windows, long_text_of, recorded_long_text
from tasks.io import read_frame, write_json

log = logging.getLogger(__name__)
# The config sections a training depends on: a checkpoint or a finished model belongs to these values.
TRAINING_SECTIONS = ("data", "model", "training")
CHECKPOINTS = "checkpoints"
MODEL = "model"
SPEC = "train_spec.json"
# What a resumed run must share with the run that wrote the checkpoints.
RESUME_MUST_MATCH = {
    "data (content digest)": lambda spec: spec["data"].get("digest"),
    "label set": lambda spec: spec["data"].get("labels"),
    "model": lambda spec: (spec["config"]["model"], spec["config"]["data"]["task"]),
}


# CPU features that run bf16 matrix products natively (Intel AMX, AVX512-BF16); without them
# autocast emulates bf16 and trains slower than fp32.
NATIVE_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags: torch's own capability check, else /proc/cpuinfo; empty when unknown."""
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return {name for name, value in get_capabilities().items() if value is True}
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def cpu_runs_bf16_natively(flags: set[str] | None = None) -> bool:
    """True when this CPU has AMX-BF16 or AVX512-BF16 (bf16 autocast is then faster than fp32)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_CPU_BF16_FLAGS)


def pick_precision(mode: str, use_cpu: bool) -> dict[str, bool]:
    """The Trainer's precision flags: bf16 autocast where the device runs it natively, else fp16 (GPUs) or fp32.

    auto: on GPUs bf16 where native, else fp16; on CPUs bf16 with AMX-BF16 or AVX512-BF16, else
    fp32. fp32 (or no) turns mixed precision off; bf16 and fp16 force it (fp16 on GPUs only: on
    CPUs it has no native kernels and no loss scaler). The weights stay fp32 either way.
    """
    import torch

    if mode in ("fp32", "no"):
        return {"bf16": False, "fp16": False}
    if use_cpu or not torch.cuda.is_available():
        if mode == "auto":
            mode = "bf16" if cpu_runs_bf16_natively() else "fp32"
        elif mode == "fp16":
            log.warning("training.mixed_precision=fp16 needs a GPU; training in fp32 on this CPU "
                        "(bf16 or auto use the CPU's bf16 where it has it)")
        return {"bf16": mode == "bf16", "fp16": False}
    if mode == "auto":
        # Without including_emulation=False, pre-Ampere GPUs (T4, V100) report bf16 and run it emulated, slowly.
        mode = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def default_best_metric(task: str) -> str:
    from tasks.modelling.metrics import primary_metric

    return primary_metric(task)


def build_model(cfg: PipelineConfig, labels: list[str] | None):
    """Load the pretrained body with a fresh head sized for the task."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from tasks.modelling.encode import ModelSourceError, resolve_model_path

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
        model = cls.from_pretrained(path, **kwargs)
    except OSError as e:
        raise ModelSourceError(f"cannot load model '{cfg.model.name}': {e}") from None
    limit = position_limit(model.config)
    if limit and cfg.model.max_length > limit:
        # Caught here, not as an index error in a batch of long texts or in the ONNX parity check.
        raise ValueError(f"model.max_length = {cfg.model.max_length} is more than model '{cfg.model.name}' takes "
                         f"({limit} positions); set model.max_length to {limit} or less")
    return model


def position_limit(config) -> int | None:
    """Longest input the model's position embeddings allow (RoBERTa-style models reserve two).

    None when positions are relative only (DeBERTa v2/v3): those take longer inputs.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if not positions or getattr(config, "position_biased_input", True) is False:
        return None
    return positions - (2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0)


def build_datasets(tokenizer, data: dict, cfg: PipelineConfig) -> dict:
    """Encode the clean splits into `datasets.Dataset`s with a length column for grouping.

    With model.long_text chunk, rows are windows with a `document` column (their row in the split).
    """
    from datasets import Dataset

    from tasks.modelling.encode import encode_frame

    long_text = long_text_of(cfg.model)
    out = {}
    for split in ("train", "validation"):
        df = read_frame(data["splits"][split])
        enc = encode_frame(tokenizer, df, cfg.data.task, data["labels"], cfg.model.max_length,
                           cfg.training.pad_to_max_length, cfg.model.label_all_subtokens,
                           long_text.stride if long_text.chunks else None)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        out[split] = Dataset.from_dict(enc)
    return out


def make_trainer_class():
    """A Trainer whose loss and optimiser follow the config (built lazily: transformers is heavy)."""
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
            self.optimizer = torch.optim.Adam(groups, lr=self.args.learning_rate,
                                              betas=(self.args.adam_beta1, self.args.adam_beta2),
                                              eps=self.args.adam_epsilon)
            return self.optimizer

    return PipelineTrainer


def make_tracking_callback(run_id: str | None):
    """A callback that logs the Trainer's history into our run and our logger (rank 0 only), with an ETA.

    It replaces the Trainer's PrinterCallback: the history goes to the `tasks.modelling.train` logger (the
    Prefect task forwards it to the run log), and into the flow's MLflow run, never one of its own.
    In an interactive terminal it also draws a progress bar (step, loss, ETA); the console then
    skips the step lines the bar repeats (tasks/progress.py).
    """
    from contextlib import ExitStack

    from transformers import TrainerCallback

    from tasks.registry import tracking
    from tasks.progress import PROGRESS_RECORD, StepClock, format_eta, progress_bar

    class TrackingCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.clock, self.bar, self.open = StepClock(state.max_steps, state.global_step), None, ExitStack()
            if state.is_world_process_zero:
                self.bar = self.open.enter_context(progress_bar(state.max_steps, "train", state.global_step))

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.open.close()
            self.bar = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            renamed = {}
            for k, v in logs.items():
                if k in ("epoch", "total_flos") or not isinstance(v, (int, float)):
                    continue
                name = k if k.startswith("eval_") else f"train_{k}" if k in ("loss", "grad_norm") else k
                if k == "train_loss":  # the closing log's mean over all steps; not one more step's loss
                    name = "train_loss_mean"
                renamed[name.replace("eval_", "val_", 1)] = v
            renamed["epoch"] = state.epoch or 0.0
            step_line = "train_loss" in renamed
            eta = f" eta {format_eta(self.clock.eta(state.global_step))}" if step_line else ""
            if step_line and self.bar is not None:
                self.bar.set_postfix_str(f"loss={renamed['train_loss']:.4f}", refresh=False)
            log.info("step %d/%d %s%s", state.global_step, state.max_steps,
                     " ".join(f"{k}={v:.4g}" for k, v in renamed.items()), eta,
                     extra={PROGRESS_RECORD: step_line})
            if run_id:
                tracking.log_metrics(run_id, renamed, step=state.global_step)

    return TrackingCallback()


AUTO_BALANCE_RATIO = 5  # class_weights auto: balance when the largest class has this many times the smallest's rows


def class_skew(train_labels: list[int], num_labels: int) -> float:
    """Rows of the largest train class per row of the smallest (a class without rows counts as one)."""
    import numpy as np

    ids = np.asarray(train_labels, dtype=np.int64).reshape(-1)
    counts = np.bincount(ids[ids >= 0], minlength=num_labels)
    return float(counts.max() / max(counts.min(), 1))


def resolve_class_weights(cfg: PipelineConfig, train_labels: list[int], num_labels: int):
    """Per-class loss weights in label order, or None.

    auto: balanced for single-label classifiers whose classes are skewed 5:1 or more (a rare class
    is otherwise never predicted); none for NER, where "O" outnumbers every entity tag by design,
    and none when focal_alpha already weighs the classes.
    """
    from tasks.modelling.losses import balanced_class_weights

    weights = cfg.training.class_weights
    if weights == "auto":
        skew = class_skew(train_labels, num_labels) \
            if cfg.data.task in ("classification", "pair_classification") and cfg.training.focal_alpha is None else 0
        weights = "balanced" if skew >= AUTO_BALANCE_RATIO else None
        if weights:
            log.info("class weights: balanced (training.class_weights auto: the largest train class has %.1fx "
                     "the rows of the smallest)", skew)
    if weights == "balanced":
        return balanced_class_weights(train_labels, num_labels)
    if weights is not None and len(weights) != num_labels:
        raise ValueError(
            f"training.class_weights has {len(weights)} values but the task has {num_labels} labels; "
            "give one weight per label, in label order, 'balanced' or 'auto'"
        )
    return weights


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def checkpoint_complete(folder: Path) -> bool:
    """True when a checkpoint's trainer_state.json parses and its weights are there.

    A kill or a full disk while saving leaves a checkpoint without its state file, with a
    truncated one, or with the state but no weights; resuming from any of them would fail.
    """
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state and any(
        (folder / f).is_file() and (folder / f).stat().st_size > 0 for f in WEIGHT_FILES)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint in `folder` (an incomplete newer one is passed over), or None."""
    if not folder.is_dir():
        return None
    steps = sorted(((int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*")
                    if p.name.split("-")[-1].isdigit()), reverse=True)
    for step, path in steps:
        if checkpoint_complete(path):
            return str(path)
        log.warning("checkpoint %s is incomplete (cut off while saving?); using the one before it", path)
    return None


def spec_digest(spec: dict) -> str:
    """Digest of what a training depends on (data, model, training settings), to recognise a finished one."""
    used = {k: spec["config"][k] for k in TRAINING_SECTIONS}
    blob = json.dumps({"config": used, "data": spec["data"]}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def finished_training(run_dir: Path, spec: dict) -> dict | None:
    """The summary of a training that already finished in run_dir for this config and data, else None.

    Resuming from its last checkpoint would not be a no-op: the Trainer clears an early stop
    on resume and would train the epochs the stop had skipped.
    """
    summary_path, meta_path = run_dir / "train_summary.json", run_dir / MODEL / "finetune_flow.json"
    if spec.get("trial") or not summary_path.is_file() or not meta_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("spec_digest") == spec_digest(spec) else None


def check_resumable(run_dir: Path, spec: dict) -> None:
    """Refuse to resume checkpoints made for other data or another model in the same run folder."""
    previous_path = run_dir / SPEC
    if not previous_path.exists() or last_checkpoint(run_dir / CHECKPOINTS) is None:
        return
    before, now = json.loads(previous_path.read_text()), spec
    differ = [name for name, get in RESUME_MUST_MATCH.items() if get(before) != get(now)]
    if differ:
        raise ValueError(
            f"cannot resume in {run_dir}: its checkpoints were trained with a different {', '.join(differ)}. "
            f"Resume with the same data and model, or start a new run (or delete {run_dir / CHECKPOINTS})."
        )


def training_arguments(cfg: PipelineConfig, run_dir: Path, checkpoints: bool = True):
    """The Trainer's arguments from our config: schedule, precision, evaluation, checkpoints, DDP.

    checkpoints=False (search trials): evaluate and track the best metric, but save nothing.
    """
    import torch
    from transformers import TrainingArguments

    from tasks.modelling.metrics import greater_is_better

    tc = cfg.training
    best_metric = tc.metric_for_best_model or default_best_metric(cfg.data.task)
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
        save_steps=tc.eval_steps,
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
    from tasks.modelling.losses import resolve_loss_name

    tc, task = cfg.training, cfg.data.task
    return {
        "task": task,
        "loss_name": resolve_loss_name(task, tc.loss),
        "class_weights": None if task == "regression" else resolve_class_weights(cfg, train_label_ids, len(labels)),
        "gamma": tc.focal_gamma,
        "alpha": tc.focal_alpha,
        "label_smoothing": tc.label_smoothing,
    }


def build_trainer(cfg: PipelineConfig, data: dict, run_dir: Path, run_id: str | None = None,
                  callbacks: list | None = None, checkpoints: bool = True):
    """Model, encoded splits, collator, loss and callbacks assembled into a PipelineTrainer."""
    import torch
    from transformers import (DataCollatorForTokenClassification, DataCollatorWithPadding, EarlyStoppingCallback,
                              PrinterCallback)

    from tasks.modelling.encode import load_tokenizer, resolve_model_path
    from tasks.modelling.metrics import make_trainer_compute_metrics

    tc, task, labels = cfg.training, cfg.data.task, data["labels"]
    torch.manual_seed(tc.seed)  # the new head's initial weights
    tokenizer = load_tokenizer(resolve_model_path(cfg.model.name), cfg.model.revision)
    model = build_model(cfg, labels)  # first: it refuses a max_length the model cannot take before any encoding
    datasets = build_datasets(tokenizer, data, cfg)
    collator = DataCollatorForTokenClassification(tokenizer) if task == "ner" else DataCollatorWithPadding(tokenizer)
    train_ids = [] if task == "regression" else datasets["train"]["labels"]  # NER: nested, -100 skipped
    compute_metrics = make_trainer_compute_metrics(task, labels)
    documents = list(datasets["validation"]["document"]) if "document" in datasets["validation"].column_names \
        else None
    if documents is not None:
        compute_metrics = per_document(compute_metrics, documents, cfg.model.aggregate)
    callbacks = [make_tracking_callback(run_id), *(callbacks or [])]
    if tc.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    trainer = make_trainer_class()(
        model=model, args=training_arguments(cfg, run_dir, checkpoints), train_dataset=datasets["train"],
        eval_dataset=datasets["validation"], data_collator=collator, processing_class=tokenizer,
        compute_metrics=compute_metrics, callbacks=callbacks,
        loss_spec=loss_spec_for(cfg, labels, train_ids), optimizer_name=tc.optimizer,
        keep_eval_order=documents is not None,
    )
    trainer.remove_callback(PrinterCallback)  # the tracking callback logs the same history
    return trainer


def per_document(compute_metrics, documents: list[int], how: str):
    """Validation metrics on documents: window logits aggregated per document (as evaluation and serving do)."""
    import numpy as np
    from transformers import EvalPrediction

    documents = np.asarray(documents)
    n_docs = int(documents.max()) + 1 if len(documents) else 0
    first = np.unique(documents, return_index=True)[1]  # a document's windows all carry its label

    def compute(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        docs = np.stack(aggregate_windows(list(logits), documents, n_docs, how))
        return compute_metrics(EvalPrediction(predictions=docs, label_ids=np.asarray(eval_pred.label_ids)[first]))

    return compute


def fit(spec: dict, callbacks: list | None = None) -> dict:
    """Run the Trainer on one process (or one rank of torchrun); the worker side of `train_model`.

    `callbacks`: extra `TrainerCallback`s (in-process only), e.g. to stop early or watch steps.
    """
    cfg = PipelineConfig.model_validate(spec["config"])
    data, run_dir = spec["data"], Path(spec["run_dir"])
    trial = spec.get("trial", False)
    trainer = build_trainer(cfg, data, run_dir, spec.get("run_id"), callbacks, checkpoints=not trial)
    resume = last_checkpoint(run_dir / CHECKPOINTS)
    result = trainer.train(resume_from_checkpoint=resume)
    summary = {
        "resumed_from": resume,
        "resumed_at_step": int(Path(resume).name.split("-")[-1]) if resume else 0,
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "metric_for_best_model": trainer.args.metric_for_best_model,
        "world_size": trainer.args.world_size,
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",  # what auto chose
        "spec_digest": spec_digest(spec),
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        if not trial:
            save_model_folder(trainer, cfg, data, run_dir / MODEL)
        write_json(run_dir / "train_summary.json", summary)
    return summary


def save_model_folder(trainer, cfg: PipelineConfig, data: dict, model_dir: Path) -> None:
    """The best model (loaded at the end of training), its tokenizer and our metadata file."""
    trainer.save_model(str(model_dir))
    trainer.processing_class.save_pretrained(str(model_dir))
    write_json(model_dir / "finetune_flow.json", {
        "task": cfg.data.task, "labels": data["labels"], "max_length": cfg.model.max_length,
        "base_model": cfg.model.name, "config_digest": cfg.digest(), "data_digest": data["digest"],
        "long_text": recorded_long_text(cfg.model),
        "training": cfg.training.model_dump(mode="json"),  # the values used, after any search
    })


def launch_distributed(spec_path: Path, nproc: int) -> None:
    """Run `fit` under torchrun with N processes (gloo on CPU, nccl on GPUs)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--standalone", "-m", "tasks.modelling.train", str(spec_path)]
    paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (torchrun exit {proc.returncode}); its output is above. "
            f"Checkpoints so far are kept in {spec_path.parent / CHECKPOINTS}; re-run to resume."
        )


def train_model(data: dict, cfg: PipelineConfig, run_dir: str | Path, run_id: str | None = None,
                callbacks: list | None = None, trial: bool = False) -> dict:
    """Fine-tune on the clean splits; return the model folder and the training summary.

    Re-running on the same `run_dir` resumes from its last complete checkpoint (same data and
    model required). `callbacks` are extra TrainerCallbacks, for in-process training only.
    trial=True (a search trial): only the best validation metric matters; no checkpoint and
    no model folder are written, which saves the disk time of a few hundred MB per save.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {"config": cfg.model_dump(mode="json"), "data": data, "run_dir": str(run_dir), "run_id": run_id,
            "trial": trial}
    done = finished_training(run_dir, spec)
    if done is not None:
        log.info("training had already finished in %s for this config and data; its model is reused "
                 "(delete %s to train again)", run_dir, run_dir / "train_summary.json")
        done.pop("log_history", None)
        return {"model_dir": str(run_dir / MODEL), "summary": {**done, "reused": True}}
    check_resumable(run_dir, spec)
    spec_path = Path(write_json(run_dir / SPEC, spec))
    nproc = cfg.training.distributed.nproc_per_node
    if nproc > 1:
        if callbacks:
            raise ValueError("extra callbacks need in-process training; set training.distributed.nproc_per_node=1")
        launch_distributed(spec_path, nproc)
        summary = json.loads((run_dir / "train_summary.json").read_text())
    else:
        summary = fit(spec, callbacks)
    summary.pop("log_history", None)
    return {"model_dir": str(run_dir / MODEL), "summary": summary}


if __name__ == "__main__":  # torchrun worker: python -m tasks.modelling.train SPEC.json
    from tasks.quiet import silence_known_noise

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    silence_known_noise(torch_stage=True)
    fit(json.loads(Path(sys.argv[1]).read_text()))
