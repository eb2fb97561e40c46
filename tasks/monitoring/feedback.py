"""Feedback: corrected labels for logged predictions, stored beside the prediction log.

The service calls `record_feedback([{request_id, label}, ...])`; a `FeedbackError` (unknown request
id, a label the answering model does not know) is its 422. `feedback_rows()` joins the stored
labels with the logged texts: the `feedback` data source trains on them.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pyarrow as pa

from tasks.kinds.multi_label import label_set_text
from tasks.labels import labels_as_strings
from tasks.monitoring.prediction_log import LOG_TEXTS_ENV, PREDICTIONS, PredictionLogger, open_sink

FEEDBACK = "feedback"
FEEDBACK_SCHEMA = pa.schema(
    [("request_id", pa.string()), ("label", pa.string()), ("time", pa.timestamp("us", tz="UTC"))]
)


class FeedbackError(ValueError):
    """Feedback that cannot be stored; `problems` lists each refused item (index, request_id, field, error)."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        shown = "; ".join(f"item {p['index']} ({p['request_id']}): {p['error']}" for p in problems[:5])
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        super().__init__(f"feedback refused, nothing stored: {shown}{more}")


SHOWN_CHARS = 40  # an error shows at most this much of a label, marked as cut: a 1 MB label is not echoed


def shown(label) -> str:
    """`label` as an error shows it: its repr, or a marked prefix with its length when long."""
    text = (
        repr(label) if not isinstance(label, int) or label.bit_length() < 128 else f"a {len(str(label))}-digit number"
    )
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters, cut)"


def as_number(label) -> float | None:
    """`label` as a finite float, or None when it is not a number, or none a float can hold ("inf", 1e400,
    a 400-digit integer, true/false)."""
    if isinstance(label, bool):
        return None
    try:
        value = float(label.strip() if isinstance(label, str) else label)
    except (TypeError, ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def allowed_labels(prediction: pd.Series) -> list[str] | None:
    """The labels the model that answered knows (the keys of its logged probabilities); None: a number."""
    if isinstance(prediction.get("probabilities"), str):
        return list(json.loads(prediction["probabilities"]))
    return None


def answered_label_set(prediction: pd.Series) -> bool:
    """Whether the logged answer is a label set (a multi-label model logs a JSON list)."""
    logged = prediction.get("prediction")
    if not isinstance(logged, str) or not logged.startswith("["):
        return False
    try:
        return isinstance(json.loads(logged), list)
    except ValueError:
        return False


def label_set_of(label) -> list[str] | None:
    """A corrected label set as sent: a list of strings, or a JSON list in a string; None for anything else."""
    if isinstance(label, str) and label.strip().startswith("["):
        try:
            label = json.loads(label)
        except ValueError:
            return None
    if isinstance(label, list) and all(isinstance(name, str) for name in label):
        return [name.strip() for name in label]
    return None


def spell_label(label, prediction: pd.Series) -> str:
    """The label as training data spells it: surrounding spaces dropped, a number as its class name
    (1, 1.0 and "1.0" all read "1", as the clean stage reads a label column), else the text as given."""
    if label is None:
        return ""
    if answered_label_set(prediction):
        names = label_set_of(label)
        assert names is not None, "check_label refuses anything but a list of label names"
        return label_set_text(names)
    if allowed_labels(prediction) is None:  # a value: stored as a float spells it, so 1 and "1.0" are one value
        value = as_number(label)
        return repr(value) if value is not None else str(label)
    text = label.strip() if isinstance(label, str) else label
    if as_number(text) is None:  # a word, true/false, or inf / 1e400 / 10**400 (no class number): as written
        return str(text)
    return str(labels_as_strings(pd.Series([text], dtype=object), allowed_labels(prediction)).iloc[0])


def check_label(label, prediction: pd.Series) -> str | None:
    """Why `label` does not fit the logged answer, or None when it does."""
    if isinstance(prediction.get("entities"), str):
        return "feedback on entity answers (NER) is not supported; correct the training data instead"
    labels = allowed_labels(prediction)
    if labels is not None and answered_label_set(prediction):
        names = label_set_of(label)
        if names is None:
            return f"label {shown(label)} is not a list of label names; send the correct set, e.g. [] or {labels[:2]}"
        unknown = [n for n in names if n not in labels]
        if unknown:
            return f"labels {shown(unknown)} are not ones the model knows: {', '.join(labels)}"
        return None
    if labels is not None:
        if isinstance(label, list):
            return f"label {shown(label)} is a list, and this model answers with one label: send one of {', '.join(labels)}"
        if spell_label(label, prediction) not in labels:
            return f"label {shown(label)} is not one the model knows: {', '.join(labels)}"
        return None
    if as_number(label) is None:
        return (
            f"label {shown(label)} is not a number (a finite one a float can hold), and this model answers "
            f"with a value: send a number such as 0.5"
        )
    return None


class LogUnavailable(RuntimeError):
    """The log cannot be written now (a full disk, a database down): feedback is refused whole, to be sent again."""


def record_feedback(
    items: list[dict], logger: PredictionLogger | None = None, location: str | None = None, client: str | None = None
) -> int:
    """Validate and store corrected labels [{request_id, label}]; all or nothing. Returns how many were stored.

    logger: the service's logger, flushed first so that a prediction answered a moment ago is found; when its
    sink fails, LogUnavailable (answers still held in memory could not be found, a correction not stored).
    client: the caller's token holder (per-client tokens); an answer logged for another client is refused as
    unknown, the same words as an id never made, so a client cannot even learn that another's id exists.
    """
    if logger is not None and not logger.flush():
        stats = logger.stats()
        raise LogUnavailable(
            f"the prediction log cannot be written now ({stats.last_error or 'writes are slow'}; {stats.queued} "
            f"answers wait in memory); nothing was stored: send the feedback again later"
        )
    ids = [str(item.get("request_id", "")) for item in items]
    # A shadowed request has a challenger row too: check the label against the answer that was served.
    logged = open_sink(PREDICTIONS, location=location).find("request_id", set(ids))
    logged = (
        logged.sort_values("role", key=lambda role: role == "challenger", kind="stable")
        .drop_duplicates("request_id")
        .set_index("request_id")
    )
    problems, spelled = [], []
    for i, (rid, item) in enumerate(zip(ids, items)):
        if rid not in logged.index or not same_client(logged.loc[rid].get("client"), client):
            problems.append(
                {
                    "index": i,
                    "request_id": rid,
                    "field": "request_id",
                    "error": "unknown request id (no logged prediction)",
                }
            )
            continue
        why = check_label(item.get("label"), logged.loc[rid])
        if why:
            problems.append({"index": i, "request_id": rid, "field": "label", "error": why})
        else:
            spelled.append(spell_label(item["label"], logged.loc[rid]))
    if problems:
        raise FeedbackError(problems)
    now = dt.datetime.now(dt.UTC)
    try:
        open_sink(FEEDBACK, FEEDBACK_SCHEMA, location).write(
            [{"request_id": rid, "label": label, "time": now} for rid, label in zip(ids, spelled)]
        )
    except OSError as e:  # a part file is written whole or not at all: nothing half-stored to undo
        raise LogUnavailable(
            f"the feedback store cannot be written now ({e.strerror or e}); send it again later"
        ) from e
    return len(items)


def same_client(logged: str | None, caller: str | None) -> bool:
    """Whether the caller may correct an answer logged for `logged`: its own, or one logged without a client."""
    return logged is None or (isinstance(logged, float) and logged != logged) or logged == caller


def read_feedback(location: str | None = None) -> pd.DataFrame:
    """The latest corrected label per request id (request_id, label, time)."""
    df = open_sink(FEEDBACK, FEEDBACK_SCHEMA, location).read()
    return df.sort_values("time", kind="stable").drop_duplicates("request_id", keep="last").reset_index(drop=True)


def join_feedback(predictions: pd.DataFrame, location: str | None = None) -> pd.DataFrame:
    """Logged predictions that have feedback, with the corrected label in `label`: one row per request id.

    A correction counts once however many rows share its id (a log written before ids were the server's
    holds a client's id on many rows), so no client can turn one correction into many.
    """
    fb = read_feedback(location)[["request_id", "label"]]
    return predictions.drop_duplicates("request_id").merge(fb, on="request_id", how="inner")


def feedback_rows(model_name: str | None = None, location: str | None = None) -> pd.DataFrame:
    """Training rows (text, text_pair, label) from logged texts with corrected labels."""
    fb = read_feedback(location)
    logged = open_sink(PREDICTIONS, location=location).find("request_id", set(fb["request_id"]))
    if model_name is not None:
        logged = logged[logged["model_name"] == model_name]
    rows = join_feedback(logged.drop_duplicates("request_id"), location)
    without_text = rows["text"].isna()
    if without_text.any() and without_text.all():
        raise ValueError(
            f"{len(rows)} feedback rows, but the prediction log holds only text hashes; start the "
            f"service with {LOG_TEXTS_ENV}=1 so that corrected texts can be trained on"
        )
    rows = rows[~without_text]
    cols = ["text", "label"] + (["text_pair"] if rows["text_pair"].notna().any() else [])
    return rows[cols].reset_index(drop=True)
