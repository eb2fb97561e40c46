"""Label and tag rules, in one place: BIO tags, the ignore index, label spellings.

Every stage reads labels through these rules (clean quarantines by them, validation checks
them, training encodes them, metrics and the inference core decode them), so a tag or a label
means the same thing from the raw snapshot to the served answer. Torch-free and pandas-free at
import: the config models and the inference core import it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# --- NER tags: IOB2 ("B-PER", "I-PER", "O"), the scheme clean enforces and training encodes ---------
OUTSIDE = "O"
BEGIN = "B-"
INSIDE = "I-"
_BIO_TAG = re.compile(r"^(O|[BI]-.+)$")

# The label id the loss and the metrics skip: padding, special tokens and later sub-tokens.
# -100 is torch's cross-entropy default, which the Hugging Face collators pad labels with.
IGNORE_INDEX = -100

_RESERVED_SUFFIXES = {"macro", "micro", "weighted"}


def is_bio_tag(tag: str) -> bool:
    """True for "O" and for B-TYPE / I-TYPE tags; anything else is quarantined by clean."""
    return bool(_BIO_TAG.match(tag))


def entity_type(tag: str) -> str:
    """The entity type a tag names ('B-PER', 'I-PER' -> 'PER'); "O" and unprefixed tags stay as they are."""
    return tag[len(BEGIN) :] if tag.startswith((BEGIN, INSIDE)) else tag


def entity_types(tags: Iterable[str]) -> list[str]:
    """Entity types named by the B-/I- tags of a tag set, in first-seen order ("O" names none)."""
    return list(dict.fromkeys(entity_type(tag) for tag in tags if tag.startswith((BEGIN, INSIDE))))


def tag_set(entity_type_names: Iterable[str]) -> list[str]:
    """The tag list in id order for entity types: "O", then B- and I- of each type, types sorted."""
    return [OUTSIDE] + [prefix + name for name in sorted(set(entity_type_names)) for prefix in (BEGIN, INSIDE)]


def inside_tag(tag: str) -> str | None:
    """The I- tag continuing a B- tag ('B-PER' -> 'I-PER'); None for any other tag."""
    return INSIDE + entity_type(tag) if tag.startswith(BEGIN) else None


def opens_entity(tag: str, current_type: str | None) -> bool:
    """Whether a tag starts a new entity: a B- tag, or an I- tag not continuing `current_type`.

    An I- tag after "O" or after another type opens an entity, as conlleval and seqeval's
    default mode count it, so decoding and the metrics agree on what an entity is.
    """
    return tag.startswith(BEGIN) or (tag.startswith(INSIDE) and current_type != entity_type(tag))


def find_bio_break(tags: Sequence[str]) -> str | None:
    """Describe the first I-X that follows neither B-X nor I-X; None when the order is valid."""
    prev = OUTSIDE
    for i, tag in enumerate(tags):
        if tag.startswith(INSIDE) and (not prev.startswith((BEGIN, INSIDE)) or entity_type(prev) != entity_type(tag)):
            return f"{tag} after {prev} at token {i}"
        prev = tag
    return None


def outside_id(labels: Sequence[str]) -> int:
    """The id of the NER "O" label (declared label lists may put it anywhere), else 0."""
    return list(labels).index(OUTSIDE) if OUTSIDE in labels else 0


# --- class labels -------------------------------------------------------------------------------------


def labels_as_strings(labels: pd.Series, declared: list[str] | None = None) -> pd.Series:
    """Class labels as strings; a column of numbers is one class per number whatever its spelling.

    1, 1.0 and "1.0" all read "1" (a JSONL with one missing label stores the others as floats),
    0.5 reads "0.5"; a spelling listed in `declared` is kept as it is. Missing stays missing.
    """
    # heavy (numpy, pandas): loaded when this runs, so importing tasks.labels stays light
    import numpy as np
    import pandas as pd

    text = labels.astype("str").where(labels.notna(), None)
    present = text.dropna()
    numbers = pd.to_numeric(present.str.strip(), errors="coerce")
    if present.empty or numbers.isna().any() or pd.api.types.is_bool_dtype(labels):
        return text  # not a numeric column: words stay as written
    whole = numbers == numbers.round()
    canonical = numbers.astype(object).where(~whole, numbers.where(whole, 0).astype("int64"))
    canonical = canonical.map(lambda v: str(v) if isinstance(v, (int, np.integer)) else repr(float(v)))
    out = text.copy()
    out[present.index] = canonical.where(~present.isin(declared or []), present)
    return out


def label_keys(label_names: Sequence[str]) -> list[str]:
    """The `<label>` part of per-class metric keys, in id order (e.g. `f1_<label>`).

    Characters outside [A-Za-z0-9_.-] become `_` (MLflow refuses some in metric names); a
    label called macro/micro/weighted, or two labels that sanitise alike, get `_<id>` appended
    so they never overwrite `f1_macro` or each other.
    """
    keys = [re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "label" for name in label_names]
    return [
        f"{key}_{i}" if key.lower() in _RESERVED_SUFFIXES or keys.count(key) > 1 else key for i, key in enumerate(keys)
    ]


_PER_CLASS = re.compile(r"(?:^|_)(?:precision|recall|f1|support)_(?!(?:macro|micro|weighted)$)[^ ]+$")


def is_per_class_metric(name: str) -> bool:
    """Whether a metric key is one class's (`f1_<label>`, `val_support_<label>`, ...) rather than a summary.

    label_keys never lets a label read `macro`, `micro` or `weighted`, so `f1_macro` is always a summary.
    """
    return bool(_PER_CLASS.search(name)) and not name.endswith(("_ci_low", "_ci_high"))


# --- label sets (multi_label) -------------------------------------------------------------------------


class LabelSetError(ValueError):
    """A label column that cannot be read as label sets; the message names the rows and the fix."""


def _label_set_form(value, separator: str | None) -> tuple[str, list[str] | None]:
    """('missing' | 'list' | 'string', the labels) of one cell; JSON-list strings count as lists."""
    if value is None or (isinstance(value, float) and value != value):
        # A delimited column writes "none of them" as an empty cell, which a CSV reader gives back as missing.
        return ("empty", []) if separator else ("missing", None)
    if isinstance(value, (list, tuple)) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1):
        return "list", [str(v).strip() for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return "list", [str(v).strip() for v in parsed]
    if not text:
        return "empty", []
    return "string", [p.strip() for p in text.split(separator)] if separator else [text]


def label_sets_of(column: pd.Series, separator: str | None, origin: str = "the data") -> pd.Series:
    """Each cell as a list of label names: `[]` or "" is the empty set; a missing cell stays None (quarantined),
    except in a delimited column (`separator` set), where an empty cell is how the empty set is written.

    A cell is a list (a Parquet/JSONL list, or a JSON list such as '["a", "b"]' in a CSV) or a string
    split at `separator` ('a|b'); a string without a separator is one label. A column mixing lists and
    plain strings is refused: which of '["a", "b"]' and 'a, b' is one label would be a guess.
    """
    # heavy (pandas): loaded when this runs, so importing tasks.labels stays light
    import pandas as pd

    forms, sets = [], []
    for value in column.tolist():
        form, names = _label_set_form(value, separator)
        forms.append(form)
        sets.append(None if names is None else [n for n in names if n])
    seen = pd.Series(forms, index=column.index)
    if (seen == "list").any() and (seen == "string").any():
        first_list = column[seen == "list"].iloc[0]
        first_string = column[seen == "string"].iloc[0]
        raise LabelSetError(
            f"the label column of {origin} mixes lists and plain strings: {int((seen == 'list').sum())} rows hold "
            f"a list (first: {str(first_list)[:60]!r}) and {int((seen == 'string').sum())} a string (first: "
            f"{str(first_string)[:60]!r}). Write every row's labels one way: a JSON list, or a string with "
            "data.label_separator between the labels (e.g. 'a|b' with label_separator: '|')"
        )
    return pd.Series(sets, index=column.index, dtype=object, name=column.name)
