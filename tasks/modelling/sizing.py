"""Defaults that fit the data: the input length from the train split's token lengths, and enough
optimizer updates for a small train split.

`model.max_length: auto` becomes the 98th percentile of the train texts' token lengths (the
smallest length 98% of them fit in), rounded up to a multiple of 8, at least 32, at most the
model's positions and 512. `training.min_updates`
raises the epochs of a run whose epochs would give fewer optimizer updates (up to
`training.max_epochs_auto`), and such a run evaluates `training.evaluations_auto` times, steps-based,
and stops early after AUTO_PATIENCE evaluations without a better primary metric; values the user
set (eval_steps, early_stopping_patience, max_steps) win. Train splits that reach the floor with
their epochs keep their schedule exactly.

Every choice is logged once here and returned as a plain record: fit writes it into
train_summary.json ("resolved_defaults"), and the model folder's finetune_flow.json carries the
resolved max_length, which evaluation, export and serving read. Torch-free.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from tasks.config import PipelineConfig
from tasks.kinds import kind_of

log = logging.getLogger(__name__)

AUTO_PERCENTILE = 98  # the longest 2% cost the most (attention is quadratic) and add the least
LENGTH_MULTIPLE = 8  # tensor cores and int8 kernels like multiples of 8
MIN_AUTO_LENGTH = 32
MAX_AUTO_LENGTH = 512  # BERT-family position tables; longer documents: model.long_text chunk
CHUNK_ADVICE_SHARE = 0.10  # more train texts than this past what the model reads: say that chunk would read them
AUTO_PATIENCE = 3  # evaluations without improvement before a raised run stops (of evaluations_auto)
CPU_TOKEN_BUDGET = 1_000_000  # ~10 minutes of MiniLM training on 2 cores at 512 tokens a row
GPU_TOKEN_BUDGET = 50_000_000
# The contrastive phase's time budget on a CPU: 119 speeches (512-token rows, read to 128) took 46 minutes
# of pairs under the token budget alone on 2 shared cores.
CPU_CONTRASTIVE_SECONDS = 600
LENGTH_SAMPLE = 20_000  # token lengths of at most this many train texts (evenly spaced rows)


def updates_per_epoch(rows: int, batch_size: int, accumulation: int = 1, world_size: int = 1) -> int:
    """Optimizer updates in one pass over `rows` examples, as the Trainer counts them (never below 1).

    Each of `world_size` ranks reads ceil(rows / world_size) examples in batches (the last one
    partial); an update takes `accumulation` batches, the last one fewer.
    """
    batches = math.ceil(math.ceil(rows / world_size) / batch_size)
    return max(math.ceil(batches / accumulation), 1)


@dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it evaluates, after the update floor."""

    updates_per_epoch: int
    configured_epochs: float
    epochs: float
    updates: int
    raised: bool  # min_updates raised the epochs
    capped: bool  # ... but max_epochs_auto stopped short of min_updates
    eval_steps: int | None
    early_stopping_patience: int | None
    budget_capped: bool = False  # ... and training.auto_token_budget stopped it sooner
    token_budget: int | None = None


def token_budget(tc, on_gpu: bool) -> int | None:
    """The tokens the data-fitted additions may train on (training.auto_token_budget; auto: by device)."""
    if tc.auto_token_budget != "auto":
        return int(tc.auto_token_budget)
    return GPU_TOKEN_BUDGET if on_gpu else CPU_TOKEN_BUDGET


def contrastive_seconds(tc, on_gpu: bool) -> int | None:
    """The contrastive phase's time budget (training.contrastive.max_seconds; auto: 600 s on a CPU, none on a GPU)."""
    limit = tc.contrastive.max_seconds
    if limit != "auto":
        return limit
    return None if on_gpu else CPU_CONTRASTIVE_SECONDS


def plan_schedule(
    tc,
    train_rows: int,
    world_size: int = 1,
    checkpoints: bool = True,
    row_tokens: float = 0.0,
    budget: int | None = None,
) -> Schedule:
    """The epochs, evaluation interval and patience for `train_rows` rows (tc: tasks.config TrainingConfig).

    checkpoints=False (search trials): no best checkpoint to return to, so no automatic early stop.
    row_tokens (mean tokens a train row) and budget: the raised epochs stop at `budget` tokens, never below
    the configured epochs.
    """
    upe = updates_per_epoch(train_rows, tc.train_batch_size, tc.gradient_accumulation_steps, world_size)
    configured = math.ceil(tc.epochs * upe)  # the Trainer's own rounding
    if tc.max_steps > 0 or tc.min_updates == 0 or configured >= tc.min_updates:
        updates = tc.max_steps if tc.max_steps > 0 else configured
        return Schedule(upe, tc.epochs, tc.epochs, updates, False, False, tc.eval_steps, tc.early_stopping_patience)
    needed = math.ceil(tc.min_updates / upe)
    epochs = float(min(needed, max(tc.max_epochs_auto, tc.epochs)))
    affordable = budget / (train_rows * row_tokens) if budget and row_tokens and train_rows else math.inf
    over_budget = affordable < epochs
    if over_budget:
        epochs = max(tc.epochs, float(math.floor(affordable)))
    updates = math.ceil(epochs * upe)
    eval_steps = tc.eval_steps or max(math.ceil(updates / tc.evaluations_auto), 1)
    patience = tc.early_stopping_patience or (AUTO_PATIENCE if checkpoints else None)
    return Schedule(upe, tc.epochs, epochs, updates, True, needed > epochs, eval_steps, patience, over_budget, budget)


def describe_schedule(s: Schedule, tc) -> str:
    """One line saying what the schedule is and why."""
    if not s.raised:
        return (
            f"training: {s.updates} optimizer updates ({s.updates_per_epoch} per epoch); "
            f"training.min_updates {tc.min_updates} {'is off' if not tc.min_updates else 'changes nothing'}"
        )
    why = (
        f"{plural(s.configured_epochs, 'epoch')} of {s.updates_per_epoch} updates give fewer than "
        f"training.min_updates {tc.min_updates}"
    )
    cap = f" (capped by training.max_epochs_auto {tc.max_epochs_auto:g})" if s.capped else ""
    if s.budget_capped:
        cap = (
            f" (capped by training.auto_token_budget: {s.token_budget:,} train tokens; set it higher, or "
            "training.epochs, to train longer)"
        )
    every = "training.eval_steps" if tc.eval_steps else f"about {tc.evaluations_auto} times"
    stop = (
        f"early stop after {s.early_stopping_patience} evaluations without a better validation metric"
        + (" (training.early_stopping_patience)" if tc.early_stopping_patience else "")
        if s.early_stopping_patience
        else "no early stop"
    )
    return (
        f"training: {why}: {s.epochs:g} epochs, {s.updates} updates{cap}; evaluated every {s.eval_steps} "
        f"updates ({every}), the best checkpoint kept, {stop}. training.min_updates=0 keeps the epochs"
    )


def plural(n: float, word: str) -> str:
    return f"{n:g} {word}{'' if n == 1 else 's'}"


def with_recorded_length(cfg: PipelineConfig, meta: dict) -> PipelineConfig:
    """The config reading inputs as the model folder was trained to: its recorded max_length (one source of
    truth for evaluation, calibration, export and the model card, whatever the config says, auto included)."""
    if cfg.model.max_length == meta["max_length"]:
        return cfg
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"max_length": meta["max_length"]})})


def with_schedule(cfg: PipelineConfig, s: Schedule) -> PipelineConfig:
    """The config with the schedule's epochs, evaluation interval and patience."""
    if not s.raised:
        return cfg
    tc = cfg.training.model_copy(
        update={"epochs": s.epochs, "eval_steps": s.eval_steps, "early_stopping_patience": s.early_stopping_patience}
    )
    return cfg.model_copy(update={"training": tc})


def sampled(df: pd.DataFrame, n: int = LENGTH_SAMPLE) -> pd.DataFrame:
    """At most n evenly spaced rows (all when fewer): length statistics need no more."""
    if len(df) <= n:
        return df
    return df.iloc[np.linspace(0, len(df) - 1, n).astype(int)]


def token_lengths(tokenizer, df: pd.DataFrame, task: str) -> list[int]:
    """Tokens per row with special tokens, untruncated (pairs: both texts together)."""
    if kind_of(task).is_token_level:
        enc = tokenizer(list(df["tokens"]), is_split_into_words=True, truncation=False, verbose=False)
    else:
        pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
        enc = tokenizer(list(df["text"]), pairs, truncation=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


def choose_max_length(lengths: list[int], limit: int | None, stride: int | None = None) -> int:
    """max_length auto: the 98th percentile of the token lengths, rounded up to a multiple of 8, at least 32
    (and twice a configured chunk stride), at most the model's positions and 512."""
    cap = min(limit or MAX_AUTO_LENGTH, MAX_AUTO_LENGTH)
    p = int(np.percentile(lengths, AUTO_PERCENTILE, method="inverted_cdf")) if len(lengths) else MIN_AUTO_LENGTH
    chosen = min(max(math.ceil(p / LENGTH_MULTIPLE) * LENGTH_MULTIPLE, MIN_AUTO_LENGTH, 2 * (stride or 0)), cap)
    if stride is not None and stride > chosen // 2:
        raise ValueError(
            f"model.stride = {stride} is more than half of the longest input the model takes ({chosen} tokens); "
            f"set model.stride to at most {chosen // 2}"
        )
    return chosen


def pair_shares(tokenizer, df: pd.DataFrame, max_length: int) -> dict | None:
    """For pairs cut at max_length: how many, and the share of each side's tokens they keep.

    The tokenizer truncates `longest_first` (the Trainer's encode and the inference core alike): the
    longer side loses tokens first, so a long text_pair cannot crowd out a short text.
    """
    if "text_pair" not in df.columns or not getattr(tokenizer, "is_fast", False) or df.empty:
        return None
    first = [len(x) for x in tokenizer(list(df["text"]), add_special_tokens=False, verbose=False)["input_ids"]]
    second = [len(x) for x in tokenizer(list(df["text_pair"]), add_special_tokens=False, verbose=False)["input_ids"]]
    enc = tokenizer(list(df["text"]), list(df["text_pair"]), truncation="longest_first", max_length=max_length)
    kept = [(enc.sequence_ids(i).count(0), enc.sequence_ids(i).count(1)) for i in range(len(df))]
    cut = [i for i, (a, b) in enumerate(kept) if a < first[i] or b < second[i]]
    if not cut:
        return {"pairs_cut": 0, "text_kept": 1.0, "text_pair_kept": 1.0}
    return {
        "pairs_cut": len(cut),
        "text_kept": sum(kept[i][0] for i in cut) / max(sum(first[i] for i in cut), 1),
        "text_pair_kept": sum(kept[i][1] for i in cut) / max(sum(second[i] for i in cut), 1),
    }


def resolve_max_length(
    cfg: PipelineConfig, tokenizer, train: pd.DataFrame, limit: int | None, say: bool = True
) -> tuple[PipelineConfig, dict]:
    """The config with an integer model.max_length, and the record of what it reads of the train split.

    auto picks the length (choose_max_length); an integer stays. Either way the log says how many
    train texts are cut (or, chunked, read in several windows) and, where many are longer than the
    model reads, that model.long_text chunk would read them whole. say=False: record, log nothing.
    """
    m, task = cfg.model, cfg.data.task
    rows = sampled(train)
    lengths = token_lengths(tokenizer, rows, task)
    auto = m.max_length == "auto"
    chosen = choose_max_length(lengths, limit, m.stride) if auto else m.length()
    n = len(lengths)
    longer = sum(x > chosen for x in lengths)
    cap = min(limit or MAX_AUTO_LENGTH, MAX_AUTO_LENGTH)
    record: dict[str, Any] = {
        "max_length": chosen,
        "max_length_from": f"auto (p{AUTO_PERCENTILE} of train token lengths)" if auto else "config",
        "train_texts_measured": n,
        "train_texts_longer": longer,
        "train_texts_longer_share": longer / n if n else 0.0,
        "token_length_median": float(np.median(lengths)) if n else 0.0,
        f"token_length_p{AUTO_PERCENTILE}": int(np.percentile(lengths, AUTO_PERCENTILE, method="inverted_cdf"))
        if n
        else 0,
        "token_length_max": max(lengths, default=0),
        "long_text": m.long_text,
    }
    shares = pair_shares(tokenizer, rows, chosen) if kind_of(task).reads_pairs else None
    if shares is not None:
        record["pairs"] = shares
    of = f"{n:,} train texts" + (f" (an even sample of {len(train):,})" if n < len(train) else "")
    read = "read in several windows" if m.long_text == "chunk" else "cut"
    tell = log.info if say else log.debug
    tell(
        "model.max_length %s: %d tokens; %d of %s are longer and %s (%.1f%%); median %.0f, p%d %d, longest %d tokens",
        "auto" if auto else "(config)",
        chosen,
        longer,
        of,
        read,
        100 * record["train_texts_longer_share"],
        record["token_length_median"],
        AUTO_PERCENTILE,
        record[f"token_length_p{AUTO_PERCENTILE}"],
        record["token_length_max"],
    )
    if shares and shares["pairs_cut"]:
        tell(
            "pairs cut at %d tokens: %d; they keep %.0f%% of text's tokens and %.0f%% of text_pair's "
            "(longest_first: the longer side is cut first)",
            chosen,
            shares["pairs_cut"],
            100 * shares["text_kept"],
            100 * shares["text_pair_kept"],
        )
    advice = long_text_advice(task, m.long_text, longer, n, chosen, cap)
    if advice:
        record["advice"] = advice
        if say:
            log.warning(advice)
    resolved = cfg.model_copy(update={"model": m.model_copy(update={"max_length": chosen})})
    return resolved, record


def long_text_advice(task: str, long_text: str, longer: int, n: int, max_length: int, cap: int) -> str | None:
    """Plain words when more than 10% of the train texts are cut at max_length: what would read them.

    Below the model's limit a longer max_length reads them; past it, model.long_text chunk (tasks that
    allow it). Nothing switches by itself: chunking multiplies the training time by the windows per text.
    """
    if not n or longer / n <= CHUNK_ADVICE_SHARE or long_text == "chunk":
        return None
    ways = []
    if max_length < cap:
        ways.append(f"model.max_length {cap} (the most the model reads) or auto would read more of them")
    if kind_of(task).uncapped:
        ways.append(
            "model.long_text: chunk would read them whole (overlapping windows of max_length tokens, one "
            "answer per document; training takes about as many times longer as a text has windows)"
        )
    if not ways:
        return None
    return (
        f"{longer} of {n:,} train texts ({100 * longer / n:.0f}%) are longer than max_length {max_length} tokens "
        f"and only their start is read: {'; '.join(ways)}. This run keeps model.long_text: truncate"
    )


def choose_strategy(cfg: PipelineConfig, train: pd.DataFrame, say: bool = True) -> dict[str, Any]:
    """What training.strategy becomes for this train split, and why: auto takes contrastive for single-label
    classification with few rows per class (measured: docs/topics/benchmarks.md), else fine_tune."""
    tc, kind = cfg.training, kind_of(cfg.data.task)
    if tc.strategy != "auto":
        return {"strategy": tc.strategy, "from": "config"}
    if not kind.is_single_label:
        return {"strategy": "fine_tune", "from": f"auto ({cfg.data.task}: contrastive pairs need single-label classes)"}
    counts = train["label"].astype(str).value_counts()
    median = float(np.median(counts.to_numpy())) if len(counts) else 0.0
    limit = tc.contrastive.auto_rows_per_class
    chosen = "contrastive" if len(counts) >= 2 and median <= limit else "fine_tune"
    record = {
        "strategy": chosen,
        "from": f"auto (median class {median:g} train rows; contrastive at most {limit})",
        "median_rows_per_class": median,
    }
    if say:
        log.info(
            "training.strategy auto: %s (the median class has %g train rows; contrastive up to "
            "training.contrastive.auto_rows_per_class %d)",
            chosen,
            median,
            limit,
        )
    return record


def with_strategy(cfg: PipelineConfig, chosen: str) -> PipelineConfig:
    """The config with training.strategy resolved (auto becomes what choose_strategy picked)."""
    if cfg.training.strategy == chosen:
        return cfg
    return cfg.model_copy(update={"training": cfg.training.model_copy(update={"strategy": chosen})})


def schedule_record(s: Schedule, tc) -> dict:
    """The schedule as train_summary.json records it."""
    return {**asdict(s), "min_updates": tc.min_updates, "eval_strategy": "steps" if s.eval_steps else "epoch"}


def log_schedule(s: Schedule, tc) -> None:
    log.info(describe_schedule(s, tc))


def resolved_tags(resolved: dict) -> dict[str, str]:
    """The choices as MLflow tags on the run (train_summary.json "resolved_defaults" holds the full record)."""
    length, schedule = resolved["max_length"], resolved["schedule"]
    return {
        "resolved.max_length": f"{length['max_length']} ({length['max_length_from']})",
        "resolved.train_texts_longer": f"{length['train_texts_longer']} of {length['train_texts_measured']}",
        "resolved.epochs": f"{schedule['epochs']:g}"
        + (" (raised by training.min_updates)" if schedule["raised"] else ""),
        "resolved.updates": str(schedule["updates"]),
        "resolved.eval_steps": str(schedule["eval_steps"] or "per epoch"),
        "resolved.early_stopping_patience": str(schedule["early_stopping_patience"] or "off"),
        **({"resolved.strategy": str(resolved["strategy"]["strategy"])} if resolved.get("strategy") else {}),
        **({"resolved.head_init": str(resolved["head"]["head_init"])} if resolved.get("head") else {}),
        **(
            {"resolved.contrastive": f"{phase['pairs']} pairs, {phase.get('updates', 0)} updates"}
            if (phase := resolved.get("contrastive"))
            else {}
        ),
    }
