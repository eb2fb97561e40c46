"""Comparing two scorers' answers on the same rows: the parity check and the int8 gate's changed share."""

from __future__ import annotations

import numpy as np

from tasks.inference.decode import Scores


def compare_answers(reference: Scores, candidate: Scores, value_tolerance: float) -> dict:
    """Rows whose answer differs, and the largest probability difference (regression: value difference).

    An answer differs when the label differs, any label decision differs (multi-label), any word's tag
    differs (NER), or a regression value
    moves by more than `value_tolerance`.
    """
    if reference.task != candidate.task or len(reference) != len(candidate):
        raise ValueError(
            f"cannot compare {len(reference)} {reference.task} answers with "
            f"{len(candidate)} {candidate.task} answers: score the same rows with the same model kind"
        )
    rows = len(reference)
    kind = reference.kind
    if kind.predicts_value:
        diff = np.abs(np.asarray(reference.predictions) - np.asarray(candidate.predictions))
        changed = diff > value_tolerance
        largest = float(diff.max()) if rows else 0.0
    elif kind.is_token_level:
        assert reference.probabilities is not None and candidate.probabilities is not None, "NER has probabilities"
        changed = np.array([list(a) != list(b) for a, b in zip(reference.predictions, candidate.predictions)])
        largest = max(
            (float(np.abs(a - b).max()) for a, b in zip(reference.probabilities, candidate.probabilities) if len(a)),
            default=0.0,
        )
    elif kind.is_single_label or kind.is_multi_label:
        assert isinstance(reference.probabilities, np.ndarray), "a classifier's probabilities are one array"
        assert isinstance(candidate.probabilities, np.ndarray), "a classifier's probabilities are one array"
        changed = np.asarray(reference.predictions) != np.asarray(candidate.predictions)
        if changed.ndim == 2:  # multi-label: a row changes when any label decision does
            changed = changed.any(axis=1)
        largest = float(np.abs(reference.probabilities - candidate.probabilities).max()) if rows else 0.0
    else:
        raise kind.unsupported("answer comparison")
    n_changed = int(np.sum(changed))
    return {
        "rows": rows,
        "changed_rows": n_changed,
        "changed_share": n_changed / rows if rows else 0.0,
        "max_abs_diff": largest,
    }
