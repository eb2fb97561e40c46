"""Long documents read whole: windows of max_length tokens with overlap, one answer per document.

With `model.long_text: chunk` a document longer than max_length becomes several windows (each
[CLS] ... [SEP], consecutive ones sharing `stride` tokens); training gives every window its
document's label, and a document's logits are the mean or the max of its windows' logits, taken
before decoding. The bundle's finetune_flow.json records the choice (`long_text`), so evaluation,
the export parity check, promotion, batch scoring, the service and the pyfunc model all read a
document the same way. Torch-free: the inference core imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LongText:
    """How texts longer than max_length are read: truncate, or chunk into overlapping windows and aggregate."""

    mode: str = "truncate"
    stride: int = 0
    aggregate: str = "mean"

    @property
    def chunks(self) -> bool:
        return self.mode == "chunk"


def long_text_of(model_cfg) -> LongText:
    """The long-text reading a model config asks for (tasks.config.ModelConfig)."""
    if model_cfg.long_text != "chunk":
        return LongText()
    return LongText("chunk", model_cfg.window_stride(), model_cfg.aggregate)


def recorded_long_text(model_cfg) -> dict:
    """The long-text reading as the model folder and the serving bundle record it (finetune_flow.json)."""
    return asdict(long_text_of(model_cfg))


def long_text_of_bundle(meta: dict) -> LongText:
    """The reading a model folder or bundle was trained with; truncation for those that predate the record."""
    return LongText(**(meta.get("long_text") or {}))


def aggregate_windows(
    logits: Sequence[np.ndarray], doc_ids: Sequence[int] | np.ndarray, n_docs: int, how: str
) -> list[np.ndarray]:
    """Per document, the mean or the element-wise max of its windows' logits (windows in any order)."""
    if how not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {how!r}")
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    if len(doc_ids) != len(logits):
        raise ValueError(f"{len(logits)} window logits but {len(doc_ids)} document ids: give one id per window")
    counts = np.bincount(doc_ids, minlength=n_docs) if len(doc_ids) else np.zeros(n_docs, dtype=np.int64)
    if len(counts) > n_docs or (counts == 0).any():
        raise ValueError(
            f"window document ids must run over 0..{n_docs - 1} and give every document a window; "
            f"{int((counts[:n_docs] == 0).sum())} documents lack one, "
            f"{int(counts[n_docs:].sum())} windows name a document past the last"
        )
    if not n_docs:
        return []
    stacked = np.stack([np.asarray(row, dtype=np.float32) for row in logits])
    # Scatter by document id: linear in the windows, whatever order the length buckets left them in.
    if how == "mean":
        out = np.zeros((n_docs, *stacked.shape[1:]), dtype=np.float32)
        np.add.at(out, doc_ids, stacked)
        out /= counts.reshape(-1, *([1] * (stacked.ndim - 1)))
    else:
        out = np.full((n_docs, *stacked.shape[1:]), -np.inf, dtype=np.float32)
        np.maximum.at(out, doc_ids, stacked)
    return list(out)


def windows_of(encodings: Sequence) -> tuple[list, list[int]]:
    """Every window of each `tokenizers.Encoding` (itself, then its overflowing parts) and its document's index."""
    windows, doc_ids = [], []
    for d, enc in enumerate(encodings):
        for w in (enc, *enc.overflowing):
            windows.append(w)
            doc_ids.append(d)
    return windows, doc_ids
