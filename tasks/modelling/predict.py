"""Scoring a labelled frame: the trained PyTorch model's own predictions (evaluation, and the reference of
the export parity check), and the task metrics of any scorer's answers.

ONNX scoring is the inference core's (tasks/inference); this side batches and decodes with the core's
functions, so both backends read logits alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import pandas as pd

from tasks.inference.batching import INPUT_NAMES, length_buckets, pad_rows
from tasks.inference.blend import BlendedScorer
from tasks.inference.decode import PLAIN, Decision, Scores, decode_logits, word_logits
from tasks.inference.windows import LongText, aggregate_windows
from tasks.kinds import kind_of
from tasks.labels import outside_id
from tasks.modelling.metrics import compute_metrics_for

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]


def torch_forward(model) -> Forward:
    """A forward callable for a PyTorch model (eval mode, no grad)."""
    # heavy (torch): loaded when this runs, so importing tasks.modelling.predict stays light
    import torch

    model.eval()
    device = next(model.parameters()).device

    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            return model(**inputs).logits.float().cpu().numpy()

    return forward


def encode_inputs(tokenizer, df: pd.DataFrame, task: str, max_length: int, long_text: LongText = LongText()):
    """Tokenise a frame for inference; returns the encoding (with word ids for NER; windows when chunking,
    with `overflow_to_sample_mapping` naming each window's row)."""
    if kind_of(task).is_token_level:
        return tokenizer(list(df["tokens"]), is_split_into_words=True, truncation=True, max_length=max_length)
    pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
    if long_text.chunks:
        return tokenizer(
            list(df["text"]),
            pairs,
            truncation=True,
            max_length=max_length,
            stride=long_text.stride,
            return_overflowing_tokens=True,
        )
    return tokenizer(list(df["text"]), pairs, truncation=True, max_length=max_length)


def predict_logits(
    forward: Forward,
    tokenizer,
    df: pd.DataFrame,
    task: str,
    max_length: int,
    batch_size: int = 64,
    outside: int = 0,
    long_text: LongText = LongText(),
) -> list[np.ndarray]:
    """Logits per row: [num_labels] per text, or [num_words, num_labels] per NER sentence.

    outside: the id of the NER "O" label, which words cut off by truncation are given.
    long_text: chunking reads every window of a long text and aggregates their logits per row.
    """
    token_level = kind_of(task).is_token_level
    enc = encode_inputs(tokenizer, df, task, max_length, long_text)
    keys = [k for k in INPUT_NAMES if k in enc]
    lengths = [len(ids) for ids in enc["input_ids"]]
    out: list[np.ndarray | None] = [None] * len(lengths)
    for idx in length_buckets(lengths, batch_size):
        logits = forward(pad_rows({k: [enc[k][i] for i in idx] for k in keys}, tokenizer.pad_token_id or 0))
        for j, i in enumerate(idx):
            out[i] = logits[j, : lengths[i]] if token_level else logits[j]
    # No slot is None any more: length_buckets yields every row index exactly once.
    rows = cast(list[np.ndarray], out)
    if token_level:
        rows = [word_logits(rows[i], enc.word_ids(i), len(df["tokens"].iloc[i]), outside) for i in range(len(df))]
    elif long_text.chunks:
        rows = aggregate_windows(rows, enc["overflow_to_sample_mapping"], len(df), long_text.aggregate)
    return rows


def references_of(df: pd.DataFrame, task: str, labels: list[str] | None) -> list:
    """Ground truth in the form the scorers predict (class ids, values, tag lists)."""
    return kind_of(task).references_of(df, labels)


def as_list(scores: Scores) -> list:
    """The predictions as plain Python values (ints, floats or tag lists) for metrics and frames."""
    return scores.predictions.tolist() if isinstance(scores.predictions, np.ndarray) else list(scores.predictions)


def metrics_of(scores: Scores, df: pd.DataFrame) -> dict:
    """The task metrics of a scorer's answers on the labelled frame it scored."""
    return compute_metrics_for(
        scores.task, as_list(scores), references_of(df, scores.task, scores.labels), scores.labels
    )


def score_frame(
    forward: Forward,
    tokenizer,
    df: pd.DataFrame,
    task: str,
    labels: list[str] | None,
    max_length: int,
    batch_size: int = 64,
    decision: Decision = PLAIN,
    long_text: LongText = LongText(),
    blend: BlendedScorer | None = None,
) -> dict:
    """Predict a labelled frame with a forward callable (the PyTorch model) and compute the task's metrics.

    decision: the model's temperature and threshold (Decision.of_meta of its finetune_flow.json), applied
    as the core applies them; the raw logits come back too, for calibration. long_text: how the model
    reads documents longer than max_length (one aggregated answer per document in chunk mode). blend: the
    bag of words mixed in (model.blend), as the core mixes it; the logits that come back are the blend's.
    """
    outside = 0
    if kind_of(task).is_token_level:
        assert labels is not None, "NER has a tag set (None only for regression)"
        outside = outside_id(labels)
    logits = model_logits = predict_logits(forward, tokenizer, df, task, max_length, batch_size, outside, long_text)
    if blend is not None:
        logits = blend(list(df["text"]), logits)
    scores = decode_logits(task, logits, labels, decision)
    return {
        "metrics": metrics_of(scores, df),
        "predictions": as_list(scores),
        "confidence": scores.confidence(),
        "references": references_of(df, task, labels),
        "scores": scores,
        "logits": logits,
        "model_logits": model_logits,  # before any blend: what the model alone answered
    }
