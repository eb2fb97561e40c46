"""Text normalisation: the one function the clean stage applies to training data and serving to requests."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.config import CleanConfig

# The two character classes, as code-point ranges, written out for both regex engines below: Arrow's
# RE2 (columns: the clean stage) and Python's `re` (a few strings: a request).
# C0/C1 control characters except tab/newline/CR, which whitespace collapse handles; zero-width space; BOM.
_CONTROL_RANGES = ((0x00, 0x08), (0x0B, 0x0C), (0x0E, 0x1F), (0x7F, 0x9F), (0x200B, 0x200B), (0xFEFF, 0xFEFF))
# Python's `\s` less the plain space (RE2's `\s` is ASCII only): what collapses to one space.
_SPACE_RANGES = (
    (0x09, 0x0D),
    (0x1C, 0x1F),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)


def _char_class(ranges: tuple[tuple[int, int], ...], escape) -> str:
    return "[" + "".join(escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in ranges) + "]"


def _re2(code: int) -> str:
    return f"\\x{{{code:x}}}"


def _python(code: int) -> str:
    return f"\\U{code:08x}"


_CONTROL = _char_class(_CONTROL_RANGES, _re2)
_SPACE_NOT_BLANK = _char_class(_SPACE_RANGES, _re2)


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


_PY_CONTROL = re.compile(_char_class(_CONTROL_RANGES, _python))
_PY_SPACE_NOT_BLANK = re.compile(_char_class(_SPACE_RANGES, _python))
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


@dataclass(frozen=True)
class LongText:
    """A text above the character cap once normalised: its row, its length before and after."""

    row: int
    chars: int
    sent_chars: int
    widened: str | None  # the first character that normalising turned into several, if one did


def longer_than(raw: list[str], normalised: list[str], max_chars: int) -> list[LongText]:
    """The texts longer than `max_chars` as the model reads them (normalised), with the rows they came from.

    NFKC makes some characters several (U+FDFA, one Arabic ligature, becomes 18), so a cap checked on
    the text as sent lets a text through that the model reads many times longer.
    """
    return [
        LongText(row, len(text), len(sent), _first_widened(sent))
        for row, (sent, text) in enumerate(zip(raw, normalised))
        if len(text) > max_chars
    ]


def _first_widened(text: str) -> str | None:
    if text.isascii():
        return None
    return next((ch for ch in text if len(unicodedata.normalize("NFKC", ch)) > 1), None)


class TextsTooLong(ValueError):
    """Texts above the character cap once normalised: `texts` and `pairs` list them (rows of the request)."""

    def __init__(self, max_chars: int, texts: list[LongText], pairs: list[LongText]):
        self.max_chars, self.texts, self.pairs = max_chars, texts, pairs
        rows = [t.row for t in texts] + [p.row for p in pairs]
        super().__init__(f"{len(rows)} text(s) above {max_chars:,} characters once normalised (rows {rows})")

    def describe(self, text: LongText) -> str:
        """Why one text is refused; it quotes no more of the text than one character that grew, by code point."""
        grew = ""
        if text.widened is not None:
            wide = unicodedata.normalize("NFKC", text.widened)
            grew = (
                f" (Unicode NFKC normalisation, which the model reads through, makes some characters several: "
                f"U+{ord(text.widened):04X} becomes {len(wide)})"
            )
        return (
            f"is {text.chars:,} characters once normalised, from {text.sent_chars:,} sent{grew}: above the "
            f"limit of {self.max_chars:,} (the server's FTFLOW_MAX_CHARS); send a shorter text"
        )


def recorded_rules(clean) -> dict:
    """The normalisation a clean config applies, as the serving bundle records it (finetune_flow.json)."""
    return {"unicode": clean.normalize_unicode, "collapse_whitespace": clean.collapse_whitespace}


def rules_of_bundle(meta: dict) -> dict:
    """The normalisation the bundle's training texts had; the clean defaults for bundles that predate the record."""
    return {**recorded_rules(CleanConfig()), **(meta.get("normalize") or {})}
