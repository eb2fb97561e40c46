"""The NER word splitter: linear in the text's length on hostile input, same words as before on any text."""

from __future__ import annotations

import re
import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.inference.tokenizer import split_words

# The splitter as it was before it was made linear, kept as the reference for what words are:
# a lazy URL with a lookahead for trailing punctuation (quadratic on "http://" + "." * n + "a").
QUADRATIC_WORD = re.compile(
    r"https?://\S+?(?=[.,;:!?)\]\"']*(?:\s|$))|[:;=]-?[()DPpO/|\[\]](?!\w)|\w(?:\.\w)+\."
    r"|[@#'’]?\w+(?:['’.&-]\w+)*|[^\w\s]+"
)

HOSTILE = {
    "url of dots": lambda n: "http://" + "." * n + "a",
    "url of commas then a word": lambda n: "see https://x" + ",;:!?" * (n // 5) + "y",
    "dotted abbreviation": lambda n: "a." * (n // 2),
    "joined word": lambda n: "a-" * (n // 2),
    "punctuation run": lambda n: "!?" * (n // 2),
}


def _seconds_per_call(text: str) -> float:
    # About the same work per timing (~3 ms), whatever the length, and the best of 9: a busy machine
    # stretches single timings, not the best one.
    calls = max(1, 2_000_000 // len(text))
    return min(timeit.repeat(lambda: split_words(text), number=calls, repeat=9)) / calls


@pytest.mark.parametrize("kind", HOSTILE)
def test_time_grows_linearly_on_hostile_text(kind):
    short, long = HOSTILE[kind](2_000), HOSTILE[kind](20_000)
    ratio = _seconds_per_call(long) / _seconds_per_call(short)
    # 10x the text: about 10x the time (the quadratic splitter measured 170x on the URL of dots).
    assert ratio < 30, f"{kind}: 20,000 characters took {ratio:.0f}x the time of 2,000"


def test_a_full_length_hostile_text_splits_in_milliseconds():
    text = HOSTILE["url of dots"](20_000)
    assert _seconds_per_call(text) < 0.01  # the quadratic splitter took ~5 s
    assert [text[a:b] for a, b in split_words(text)] == [text]  # one URL; its last character is no punctuation


@settings(max_examples=1000, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "http://",
                "https://",
                "http",
                "x.co",
                "U.S.",
                "a",
                "b",
                "é",
                "1",
                ".",
                ",",
                ";",
                ":",
                "!",
                "?",
                ")",
                "]",
                "(",
                '"',
                "'",
                "’",
                "@",
                "#",
                "&",
                "-",
                "/",
                "=",
                "D",
                "P",
                " ",
                "\n",
                "...",
            ]
        ),
        max_size=25,
    ).map("".join)
)
def test_same_words_as_the_quadratic_splitter(text):
    assert split_words(text) == [m.span() for m in QUADRATIC_WORD.finditer(text)]
