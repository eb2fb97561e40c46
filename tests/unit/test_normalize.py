"""The request path normalises in Python, the clean stage in Arrow: both must give the same text."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from tasks.inference.normalize import normalize_strings, normalize_texts

# Every character one of the rules treats specially, and neighbours that they must leave alone.
SPECIAL = (
    [chr(c) for c in range(0x00, 0x21)]
    + [chr(c) for c in range(0x7F, 0xA1)]
    + [
        "\u1680",
        "\u180e",
        "\u2000",
        "\u2005",
        "\u200a",
        "\u200b",
        "\u200c",
        "\u200d",
        "\u2028",
        "\u2029",
        "\u202f",
        "\u205f",
        "\u2060",
        "\u3000",
        "\ufeff",
        "\ufb01",
        "\u00bd",
        "\u2126",
        "\uff21",
        "e\u0301",
        "\u00e9",
        "\u1e9b\u0323",
        "\U0001f600",
        "x",
        "  ",
        " ",
    ]
)


def corpus(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = ["", " ", "  a  b  ", "\tplain\ttext\n", "na\u00efve caf\u00e9", "\u00a0lead and trail\u3000"]
    texts += ["".join(rng.choice(SPECIAL) for _ in range(rng.randint(1, 12))) for _ in range(n)]
    return texts


@pytest.mark.parametrize("unicode", [True, False])
@pytest.mark.parametrize("collapse", [True, False])
def test_python_and_arrow_paths_agree(unicode, collapse):
    texts = corpus()
    arrow = normalize_strings(pa.array(texts, type=pa.string()), unicode, collapse).to_pylist()
    python = normalize_texts(texts, unicode, collapse)
    differ = [(t, a, p) for t, a, p in zip(texts, arrow, python) if a != p]
    assert not differ, differ[:5]


def test_the_rules_do_what_they_say():
    assert normalize_texts(["  a\u00a0\u00a0b\t\nc\u200b\x07 "]) == ["a b c"]
    assert normalize_texts(["\ufb01ne"]) == ["fine"] and normalize_texts(["\ufb01ne"], unicode=False) == ["\ufb01ne"]
    assert normalize_texts(["a  b"], collapse_whitespace=False) == ["a  b"]


def test_the_character_cap_counts_the_text_as_the_model_reads_it():
    """On main the cap counted the text as sent: 20,000 of U+FDFA passed and the model read 360,000 characters."""
    from tasks.inference.normalize import TextsTooLong, longer_than

    sent = ["fine", "\ufdfa" * 20_000, "\ufdfa" * 1_000, "a  b " * 8_000]
    read = normalize_texts(sent)
    assert [len(t) for t in read] == [4, 360_000, 18_000, 31_999]
    long = longer_than(sent, read, 20_000)
    assert [(t.row, t.chars, t.sent_chars, t.widened) for t in long] == [
        (1, 360_000, 20_000, "\ufdfa"),
        (3, 31_999, 40_000, None),
    ]
    message = TextsTooLong(20_000, long, []).describe(long[0])
    assert "360,000 characters once normalised, from 20,000 sent" in message and "FTFLOW_MAX_CHARS" in message
    assert "U+FDFA becomes 18" in message and "\ufdfa" not in message  # named by code point, never echoed
    assert longer_than(sent, read, 400_000) == []
