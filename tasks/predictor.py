"""The serving-side model: an ONNX bundle plus its tokenizer, answering texts without torch.

Tokenisation uses the `tokenizers` library on the bundle's tokenizer.json directly:
`transformers.AutoTokenizer` imports torch (~4 s, ~300 MB), which the serving image leaves out.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tasks.io import read_json


# Words as NER training data cuts them (CoNLL, WNUT): a URL (without trailing punctuation), an
# emoticon, a dotted abbreviation with its final dot ("U.S."), a word with its inner apostrophes,
# dots and hyphens ("don't", "e-mail") and a leading @, # or apostrophe ("'s"), or a run of
# punctuation (",", "...", ":)").
# Every alternative matches without backtracking over the text: a URL takes its whole run of
# non-space characters and split_words gives the trailing punctuation back. (A lazy URL with a
# lookahead for that punctuation was quadratic: "http://" + "." * 20000 + "a" took 6 s.)
_WORD = re.compile(r"(?P<url>https?://)\S+|[:;=]-?[()DPpO/|\[\]](?!\w)|\w(?:\.\w)+\."
                   r"|[@#'’]?\w+(?:['’.&-]\w+)*|[^\w\s]+")
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


def load_tokenizer(bundle_dir: Path, max_length: int):
    """The bundle's fast tokenizer, truncating at max_length and never padding (we pad per batch)."""
    from tokenizers import Tokenizer

    path = bundle_dir / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the serving bundle needs a fast tokenizer (tokenizer.json); "
                                f"re-export the run with a model whose tokenizer has a fast version")
    tok = Tokenizer.from_file(str(path))
    # Set once here and never again: a tokenizer shared by request threads must not be reconfigured.
    tok.no_padding()
    tok.enable_truncation(max_length, strategy="longest_first")
    return tok


def pad_id_of(bundle_dir: Path, tokenizer) -> int:
    """The pad token id named by tokenizer_config.json ([PAD] for BERT), else 0."""
    cfg_path = bundle_dir / "tokenizer_config.json"
    name = read_json(cfg_path).get("pad_token") if cfg_path.exists() else None
    if isinstance(name, dict):  # older configs store AddedToken dicts
        name = name.get("content")
    pid = tokenizer.token_to_id(name) if name else None
    return 0 if pid is None else int(pid)


class OnnxPredictor:
    """Loads a serving bundle (model.onnx or model.int8.onnx, tokenizer.json, finetune_flow.json)."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, model_file: str | None = None):
        from tasks.export import session

        self.dir = Path(bundle_dir)
        self.meta = read_json(self.dir / "finetune_flow.json")
        self.task: str = self.meta["task"]
        self.labels: list[str] | None = self.meta["labels"]
        self.max_length: int = self.meta["max_length"]
        self.model_file = model_file or self.meta.get("serving_file", "model.onnx")
        self.tokenizer = load_tokenizer(self.dir, self.max_length)
        self.pad_id = pad_id_of(self.dir, self.tokenizer)
        self.session = session(self.dir / self.model_file, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def needs_pairs(self) -> bool:
        return self.task == "pair_classification"

    def _encode(self, texts: list[str], pairs: list[str] | None, words: list[list[tuple[int, int]]] | None = None):
        """Token encodings (truncated at max_length) and a padded int64 batch for the graph.

        words: each text's word spans (NER); the text is then encoded as those words.
        """
        if words is not None:
            encs = self.tokenizer.encode_batch([[t[a:b] for a, b in spans] for t, spans in zip(texts, words)],
                                               is_pretokenized=True)
        else:
            encs = self.tokenizer.encode_batch(list(zip(texts, pairs)) if pairs is not None else list(texts))
        width = max(len(e.ids) for e in encs)
        batch = {"input_ids": np.full((len(encs), width), self.pad_id, dtype=np.int64),
                 "attention_mask": np.zeros((len(encs), width), dtype=np.int64),
                 "token_type_ids": np.zeros((len(encs), width), dtype=np.int64)}
        for i, e in enumerate(encs):
            n = len(e.ids)
            batch["input_ids"][i, :n] = e.ids
            batch["attention_mask"][i, :n] = 1
            batch["token_type_ids"][i, :n] = e.type_ids
        return encs, {k: v for k, v in batch.items() if k in self.input_names}

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], feed)[0]

    def predict(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """Predict a batch; each answer says whether its input was truncated at max_length."""
        from tasks.predict import softmax

        if not texts:
            return []
        if self.needs_pairs and pairs is None:
            raise ValueError("this model classifies text pairs: give a second text (text_pair) with each text")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} second texts: give one second text per text")
        if self.task == "ner":
            words = [split_words(t) for t in texts]
            encs, feed = self._encode(texts, None, words)
            logits = self._run(feed)
            return [self._entities(*args) for args in zip(texts, words, encs, logits)]
        encs, feed = self._encode(texts, pairs)
        logits = self._run(feed)
        out = []
        for row, enc in zip(logits, encs):
            cut = bool(enc.overflowing)  # truncation leaves the cut-off tokens here
            if self.task == "regression":
                out.append({"value": float(row[0]), "truncated": cut})
            else:
                p = softmax(row)
                k = int(p.argmax())
                out.append({"label": self.labels[k], "score": float(p[k]),
                            "scores": {name: float(v) for name, v in zip(self.labels, p)}, "truncated": cut})
        return out

    def _entities(self, text: str, words: list[tuple[int, int]], enc, token_logits: np.ndarray) -> dict:
        """Entities with character spans of whole words, from BIO tags on the first sub-token of each word."""
        from tasks.predict import softmax

        probs = softmax(token_logits[: len(enc.ids)])
        entities, current, previous = [], None, None
        for t, wid in enumerate(enc.word_ids):
            if wid is None or wid == previous:
                previous = wid
                continue
            previous = wid
            k = int(probs[t].argmax())
            tag = self.labels[k]
            start, end = words[wid]
            if tag.startswith("B-") or (tag.startswith("I-") and (current is None or current["type"] != tag[2:])):
                current = {"type": tag[2:], "start": start, "end": end, "scores": [float(probs[t][k])]}
                entities.append(current)
            elif tag.startswith("I-"):
                current["end"] = end
                current["scores"].append(float(probs[t][k]))
            else:
                current = None
        for e in entities:
            e["text"] = text[e["start"]:e["end"]]
            e["score"] = float(np.mean(e.pop("scores")))
        return {"entities": entities, "truncated": bool(enc.overflowing)}
