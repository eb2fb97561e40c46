"""Text normalisation: the one function the clean stage applies to training data and serving to requests."""

from __future__ import annotations

import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

# RE2 patterns (Arrow's regex engine), written for RE2: its `\s` is ASCII [\t\n\f\r ] only.
# C0/C1 control characters except tab/newline/CR, which whitespace collapse handles; zero-width space; BOM.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{200b}\x{feff}]"
# Python's `\s` less the plain space: what collapses to one space.
_SPACE_NOT_BLANK = (r"[\t\n\x0b\x0c\r\x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
                    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]")


def normalize_nfkc(arr: pa.Array) -> pa.Array:
    """NFKC-normalise the strings that are not pure ASCII (ASCII is already NFKC)."""
    # Not pc.utf8_normalize: pyarrow 25 returns decomposed text for NFKC ("é" -> "e" + U+0301).
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(arr), True))
    if not pc.any(non_ascii).as_py():
        return arr
    texts = pc.filter(arr, non_ascii).to_pylist()
    normed = pa.array([unicodedata.normalize("NFKC", t) for t in texts], type=arr.type)
    return pc.replace_with_mask(arr, non_ascii, normed)


def normalize_strings(arr: pa.Array, unicode: bool = True, collapse_whitespace: bool = True) -> pa.Array:
    """NFKC (when `unicode`), control characters out, whitespace collapsed (when asked); nulls stay null."""
    # Arrow's RE2 kernels run in C++; the same rules through Python's `re` took ~13 s per million rows.
    if unicode:
        arr = normalize_nfkc(arr)
    arr = pc.replace_substring_regex(arr, _CONTROL, "")
    if collapse_whitespace:
        # Two rare-match passes instead of one `\s+`, which matches at every word gap (~10x slower).
        arr = pc.replace_substring_regex(arr, _SPACE_NOT_BLANK, " ")
        arr = pc.utf8_trim(pc.replace_substring_regex(arr, " {2,}", " "), " ")
    return arr


# The same three character classes for Python's `re`, for a few strings at a time.
_PY_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_PY_SPACE_NOT_BLANK = re.compile("[\t\n\x0b\x0c\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a"
                                 "\u2028\u2029\u202f\u205f\u3000]")
_PY_SPACES = re.compile(" {2,}")


def normalize_one(text: str, unicode: bool = True, collapse_whitespace: bool = True) -> str:
    """normalize_strings' rules for one Python string, in the same order."""
    if unicode and not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = _PY_CONTROL.sub("", text)
    if collapse_whitespace:
        text = _PY_SPACES.sub(" ", _PY_SPACE_NOT_BLANK.sub(" ", text)).strip(" ")
    return text


def normalize_texts(texts: list[str], unicode: bool = True, collapse_whitespace: bool = True) -> list[str]:
    """normalize_strings for a list of Python strings (a request, a batch to score).

    Arrow's kernels pay a fixed cost per call that a request of one text felt (a quarter of the
    service's CPU per request); a list is normalised in Python, with the same rules.
    """
    return [normalize_one(t, unicode, collapse_whitespace) for t in texts]


def recorded_rules(clean) -> dict:
    """The normalisation a clean config applies, as the serving bundle records it (finetune_flow.json)."""
    return {"unicode": clean.normalize_unicode, "collapse_whitespace": clean.collapse_whitespace}


def rules_of_bundle(meta: dict) -> dict:
    """The normalisation the bundle's training texts had; the clean defaults for bundles that predate the record."""
    from tasks.config import CleanConfig

    return {**recorded_rules(CleanConfig()), **(meta.get("normalize") or {})}
