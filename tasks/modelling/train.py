"""Train: fine-tune a pretrained checkpoint with the Hugging Face Trainer.

`train_model` is the stage. It runs `fit` in this process, or launches the same
`fit` under `torchrun` when `training.distributed.nproc_per_node > 1`
(`python -m tasks.modelling.train SPEC.json` is the worker's entry point; gloo on CPU, one
process per GPU; rank 0 alone logs and saves). Checkpoints go to `RUN/checkpoints`; a
re-run of the same run folder (a Prefect retry, `fine_tune(resume_from=RUN)`, or a
plain second call) resumes from the last complete one, and refuses when the data or
the model changed. The loss is ours (tasks.modelling.losses), scaled so that gradient
accumulation and DDP average over examples exactly as one large batch would.

Its parts, one concern each: sizing.py (max_length auto, the update floor), precision.py
(bf16/fp16/fp32), model.py (body and head),
trainer.py (the Trainer subclass, loss, class weights, TrainingArguments), callbacks.py
(history into MLflow and the log), checkpoints.py (last complete checkpoint, resume
digests), distributed.py (the torchrun launch). This module builds and runs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from tasks.bundle import ModelMeta, write_meta
from tasks.config import PipelineConfig
from tasks.inference.windows import aggregate_windows, long_text_of, recorded_long_text
from tasks.io import read_frame, write_json
from tasks.kinds import kind_of
from tasks.modelling.callbacks import make_tracking_callback
from tasks.modelling.checkpoints import (
    CHECKPOINTS,
    MODEL,
    SPEC,
    check_resumable,
    finished_training,
    last_checkpoint,
    spec_digest,
)
from tasks.modelling.contrastive import tune_body_contrastively
from tasks.modelling.distributed import launch_distributed
from tasks.modelling.encode import encode_frame, load_tokenizer, resolve_model_path
from tasks.modelling.head_init import init_head_from_probe
from tasks.modelling.metrics import make_trainer_compute_metrics
from tasks.modelling.model import build_model, position_limit
from tasks.modelling.sizing import (
    choose_strategy,
    contrastive_seconds,
    log_schedule,
    plan_schedule,
    resolve_max_length,
    schedule_record,
    token_budget,
    with_schedule,
    with_strategy,
)
from tasks.modelling.trainer import loss_spec_for, make_trainer_class, training_arguments
from tasks.results import CleanResult, TrainResult

log = logging.getLogger(__name__)


def build_datasets(tokenizer, data: CleanResult, cfg: PipelineConfig) -> dict:
    """Encode the clean splits into `datasets.Dataset`s with a length column for grouping.

    With model.long_text chunk, rows are windows with a `document` column (their row in the split).
    """
    from datasets import Dataset  # heavy (datasets): loaded when training runs, so importing this module stays light

    long_text = long_text_of(cfg.model)
    out = {}
    for split in ("train", "validation"):
        df = read_frame(data.splits[split])
        enc = encode_frame(
            tokenizer,
            df,
            cfg.data.task,
            data.labels,
            cfg.model.length(),
            cfg.training.pad_to_max_length,
            cfg.model.label_all_subtokens,
            long_text.stride if long_text.chunks else None,
        )
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        out[split] = Dataset.from_dict(enc)
    return out


def build_trainer(
    cfg: PipelineConfig,
    data: CleanResult,
    run_dir: Path,
    run_id: str | None = None,
    callbacks: list | None = None,
    checkpoints: bool = True,
):
    """Model, encoded splits, collator, loss and callbacks assembled into a PipelineTrainer.

    Returns (trainer, the config with the data-fitted defaults resolved, the record of those choices):
    model.max_length auto becomes a number and training.min_updates may raise the epochs (sizing.py).
    """
    # heavy (torch, transformers): loaded when training runs, so importing this module stays light
    import torch
    from transformers import (
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        PrinterCallback,
    )

    task, labels = cfg.data.task, data.labels
    torch.manual_seed(cfg.training.seed)  # the new head's initial weights
    tokenizer = load_tokenizer(resolve_model_path(cfg.model.name), cfg.model.revision)
    model = build_model(cfg, labels)  # first: it refuses a max_length the model cannot take before any encoding
    say = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 alone tells the choices
    train = read_frame(data.splits["train"])
    cfg, length = resolve_max_length(cfg, tokenizer, train, position_limit(model.config), say=say)
    strategy = choose_strategy(cfg, train, say=say)
    cfg = with_strategy(cfg, strategy["strategy"])
    datasets = build_datasets(tokenizer, data, cfg)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    lengths = datasets["train"]["length"]
    on_gpu = torch.cuda.is_available() and not cfg.training.use_cpu
    budget = token_budget(cfg.training, on_gpu)
    row_tokens = sum(lengths) / max(len(lengths), 1)
    schedule = plan_schedule(cfg.training, len(lengths), world_size, checkpoints, row_tokens, budget)
    if say:
        log_schedule(schedule, cfg.training)
    cfg = with_schedule(cfg, schedule)
    tc = cfg.training
    kind = kind_of(task)
    collator = (
        DataCollatorForTokenClassification(tokenizer) if kind.is_token_level else DataCollatorWithPadding(tokenizer)
    )
    train_ids = datasets["train"]["labels"] if kind.has_labels else []  # NER: nested, -100 skipped
    loss_spec = loss_spec_for(cfg, labels, train_ids)
    compute_metrics = make_trainer_compute_metrics(task, labels)
    documents = list(datasets["validation"]["document"]) if "document" in datasets["validation"].column_names else None
    if documents is not None:
        compute_metrics = per_document(compute_metrics, documents, cfg.model.aggregate)
    # A run resuming from a checkpoint loads its weights: the head and body placed here would be overwritten.
    fresh = not (checkpoints and last_checkpoint(run_dir / CHECKPOINTS))
    phase = (
        tune_body_contrastively(
            model, datasets["train"], collator, tc.contrastive, tc.seed, budget, contrastive_seconds(tc, on_gpu)
        )
        if tc.strategy == "contrastive" and fresh
        else None
    )
    head = (
        init_head_from_probe(model, datasets["train"], collator, task, tc.seed)
        if (cfg.model.head_init == "probe" or phase is not None) and fresh
        else {"head_init": "random" if fresh else "from the checkpoint resumed"}
    )
    callbacks = [make_tracking_callback(run_id), *(callbacks or [])]
    if tc.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tc.early_stopping_patience))
    trainer = make_trainer_class()(
        model=model,
        args=training_arguments(cfg, run_dir, checkpoints),
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=callbacks,
        loss_spec=loss_spec,
        optimizer_name=tc.optimizer,
        keep_eval_order=documents is not None,
    )
    trainer.remove_callback(PrinterCallback)  # the tracking callback logs the same history
    return (
        trainer,
        cfg,
        {
            "max_length": length,
            "schedule": schedule_record(schedule, cfg.training),
            "strategy": strategy,
            "head": head,
            "contrastive": phase,
        },
    )


def per_document(compute_metrics, documents: list[int], how: str):
    """Validation metrics on documents: window logits aggregated per document (as evaluation and serving do)."""
    from transformers import EvalPrediction  # heavy (transformers): loaded when training runs

    doc_ids = np.asarray(documents)
    n_docs = int(doc_ids.max()) + 1 if len(doc_ids) else 0
    first = np.unique(doc_ids, return_index=True)[1]  # a document's windows all carry its label

    def compute(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        docs = np.stack(aggregate_windows(list(logits), doc_ids, n_docs, how))
        return compute_metrics(EvalPrediction(predictions=docs, label_ids=np.asarray(eval_pred.label_ids)[first]))

    return compute


def fit(spec: dict, callbacks: list | None = None) -> dict:
    """Run the Trainer on one process (or one rank of torchrun); the worker side of `train_model`.

    `callbacks`: extra `TrainerCallback`s (in-process only), e.g. to stop early or watch steps.
    """
    cfg = PipelineConfig.model_validate(spec["config"])
    data, run_dir = CleanResult(**spec["data"]), Path(spec["run_dir"])
    trial = spec.get("trial", False)
    trainer, used, resolved = build_trainer(cfg, data, run_dir, spec.get("run_id"), callbacks, checkpoints=not trial)
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
        "resolved_defaults": resolved,  # what max_length auto and the update floor chose (sizing.py)
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        if not trial:
            save_model_folder(trainer, cfg, data, run_dir / MODEL, used)
        write_json(run_dir / "train_summary.json", summary)
    return summary


def save_model_folder(
    trainer, cfg: PipelineConfig, data: CleanResult, model_dir: Path, used: PipelineConfig | None = None
) -> None:
    """The best model (loaded at the end of training), its tokenizer and our metadata file.

    `used`: the config as trained, its defaults resolved (an integer max_length, the epochs run);
    evaluation, export and serving read max_length from here. The digest stays the run config's.
    """
    used = used or cfg
    trainer.save_model(str(model_dir))
    trainer.processing_class.save_pretrained(str(model_dir))
    write_meta(
        model_dir,
        ModelMeta(
            task=cfg.data.task,
            labels=data.labels,
            max_length=used.model.length(),
            base_model=cfg.model.name,
            config_digest=cfg.digest(),
            data_digest=data.digest,
            long_text=recorded_long_text(used.model),
            training=used.training.model_dump(mode="json"),  # the values used, after any search and the floor
        ),
    )


def train_model(
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: str | Path,
    run_id: str | None = None,
    callbacks: list | None = None,
    trial: bool = False,
) -> TrainResult:
    """Fine-tune on the clean splits; return the model folder and the training summary.

    Re-running on the same `run_dir` resumes from its last complete checkpoint (same data and
    model required). `callbacks` are extra TrainerCallbacks, for in-process training only.
    trial=True (a search trial): only the best validation metric matters; no checkpoint and
    no model folder are written, which saves the disk time of a few hundred MB per save.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # train_spec.json: the torchrun workers read it, and a resume compares it with the new run's.
    spec = {
        "config": cfg.model_dump(mode="json"),
        "data": dataclasses.asdict(data),
        "run_dir": str(run_dir),
        "run_id": run_id,
        "trial": trial,
    }
    done = finished_training(run_dir, spec)
    if done is not None:
        log.info(
            "training had already finished in %s for this config and data; its model is reused "
            "(delete %s to train again)",
            run_dir,
            run_dir / "train_summary.json",
        )
        done.pop("log_history", None)
        return TrainResult(model_dir=str(run_dir / MODEL), summary={**done, "reused": True})
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
    return TrainResult(model_dir=str(run_dir / MODEL), summary=summary)


if __name__ == "__main__":  # torchrun worker: python -m tasks.modelling.train SPEC.json
    from tasks.quiet import silence_known_noise

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    silence_known_noise(torch_stage=True)
    fit(json.loads(Path(sys.argv[1]).read_text()))
