"""Tokenisation with the `tokenizers` library on the bundle's tokenizer.json.

Not `transformers.AutoTokenizer`: it imports torch (~4 s, ~300 MB), which the serving image leaves
out. Both read the same tokenizer.json, so the ids equal those the model was trained and gated on.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.io import read_json

# Words as NER training data cuts them (CoNLL, WNUT): a URL (without trailing punctuation), an
# emoticon, a dotted abbreviation with its final dot ("U.S."), a word with its inner apostrophes,
# dots and hyphens ("don't", "e-mail") and a leading @, # or apostrophe ("'s"), or a run of
# punctuation (",", "...", ":)").
_WORD = re.compile(
    r"(?P<url>https?://)\S+|[:;=]-?[()DPpO/|\[\]](?!\w)|\w(?:\.\w)+\."
    r"|[@#'’]?\w+(?:['’.&-]\w+)*|[^\w\s]+"
)
_URL_TAIL = ".,;:!?)]\"'"  # punctuation that ends the sentence, not the URL


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words an NER model labels (one label per word, on its first sub-token).

    BERT's own pre-tokenizer splits at every punctuation mark, so "@justinbieber" would become
    two words and the second would be read at a position that training never labels.
    Linear in the text's length, whatever the text.
    """
    spans, pos = [], 0
    while (m := _WORD.search(text, pos)) is not None:
        start, end = m.span()
        if m.group("url") is not None:  # keep at least one character after "://"
            body = m.end("url")
            end = max(body + 1, body + len(text[body:end].rstrip(_URL_TAIL)))
        spans.append((start, end))
        pos = end
    return spans


def load_tokenizer(bundle_dir: Path, max_length: int, stride: int = 0):
    """The bundle's fast tokenizer, truncating at max_length and never padding (batches pad themselves).

    What truncation cuts off is kept in each encoding's `overflowing`, as windows sharing `stride`
    tokens with the one before (tasks.inference.windows reads them when the model chunks).
    """
    # heavy (tokenizers): loaded when this runs, so importing tasks.inference.tokenizer stays light
    from tokenizers import Tokenizer

    path = bundle_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the serving bundle needs a fast tokenizer (tokenizer.json); "
            f"re-export the run with a model whose tokenizer has a fast version"
        )
    tok = Tokenizer.from_file(str(path))
    # Set once here and never again: a tokenizer shared by request threads must not be reconfigured.
    tok.no_padding()
    tok.enable_truncation(max_length, stride=stride, strategy="longest_first")
    return tok


def pad_id_of(bundle_dir: Path, tokenizer) -> int:
    """The pad token id named by tokenizer_config.json ([PAD] for BERT), else 0."""
    cfg_path = bundle_dir / "tokenizer_config.json"
    name = read_json(cfg_path).get("pad_token") if cfg_path.exists() else None
    if isinstance(name, dict):  # older configs store AddedToken dicts
        name = name.get("content")
    pid = tokenizer.token_to_id(name) if name else None
    return 0 if pid is None else int(pid)


def encode_rows(
    tokenizer, texts: list[str] | None = None, pairs: list[str] | None = None, words: list[list[str]] | None = None
) -> list:
    """One `tokenizers.Encoding` per row: texts (with their second texts), or rows of words (NER)."""
    if words is not None:
        return tokenizer.encode_batch([list(w) for w in words], is_pretokenized=True)
    assert texts is not None, "give texts (with their pairs) or rows of words"
    return tokenizer.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
