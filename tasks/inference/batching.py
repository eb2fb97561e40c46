"""Length-bucketed batches: rows of similar length together, so little of each batch is padding."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def length_buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row positions in batches of `batch_size`, shortest rows first; callers put answers back by position."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")  # ties keep input order
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_rows(rows: dict[str, list[Sequence[int]]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pad each input's token lists to the batch's longest row (int64); input_ids take `pad_id`, the rest 0."""
    width = max(len(r) for r in rows["input_ids"])
    out = {}
    for key, values in rows.items():
        arr = np.full((len(values), width), pad_id if key == "input_ids" else 0, dtype=np.int64)
        for i, r in enumerate(values):
            arr[i, : len(r)] = r
        out[key] = arr
    return out
