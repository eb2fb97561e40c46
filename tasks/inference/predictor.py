"""OnnxPredictor: a serving bundle answering raw texts through the inference core, without torch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tasks.bundle import read_meta
from tasks.inference.batching import length_buckets, pad_rows
from tasks.inference.blend import Blend, BlendedScorer
from tasks.inference.decode import Decision, Scores, decode_logits, entities_of, word_logits
from tasks.inference.normalize import TextsTooLong, longer_than, normalize_texts, rules_of_bundle
from tasks.inference.session import create_session, quantises_per_call
from tasks.inference.tokenizer import encode_rows, load_tokenizer, pad_id_of, split_words
from tasks.inference.windows import aggregate_windows, long_text_of_bundle, windows_of
from tasks.kinds import kind_of
from tasks.labels import outside_id

DEFAULT_BATCH_SIZE = 32  # rows per ONNX Runtime call; length buckets keep the padding small


def file_in_bundle(bundle_dir: Path, name: str) -> Path:
    """`bundle_dir / name` when it lies inside the bundle; a ValueError naming both otherwise.

    The name comes from the bundle's own metadata (`serving_file`), which travels with a registered
    model: joined unchecked, `../x.onnx` or an absolute path would load any ONNX file on the machine.
    """
    root = bundle_dir.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise ValueError(
            f"bundle {bundle_dir}: serving_file {str(name)[:200]!r} in finetune_flow.json points outside the "
            f"bundle ({path}); a bundle serves only a file of its own folder, e.g. 'model.onnx'. Re-export the "
            f"model (ftflow run) or correct serving_file"
        )
    return path


class OnnxPredictor:
    """Loads a serving bundle (model.onnx or model.int8.onnx, tokenizer.json, finetune_flow.json)."""

    def __init__(
        self,
        bundle_dir: str | Path,
        threads: int | None = None,
        model_file: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_chars: int | None = None,
    ):
        self.dir = Path(bundle_dir)
        # The most characters of a text as the model reads it (normalised); None: no cap (batch scoring).
        self.max_chars = max_chars
        self.meta = read_meta(self.dir).as_dict()  # validated: a broken record fails here, naming the field
        self.task: str = self.meta["task"]
        self.kind = kind_of(self.task)  # an unknown kind fails here, not in its first answer
        self.labels: list[str] | None = self.meta["labels"]
        self.decision = Decision.of_meta(self.meta)
        self.max_length: int = self.meta["max_length"]
        self.model_file = model_file or self.meta.get("serving_file", "model.onnx")
        model_path = file_in_bundle(self.dir, self.model_file)
        self.normalize = rules_of_bundle(self.meta)
        self.long_text = long_text_of_bundle(self.meta)
        self.tokenizer = load_tokenizer(self.dir, self.max_length, self.long_text.stride)
        self.pad_id = pad_id_of(self.dir, self.tokenizer)
        self.session = create_session(model_path, threads)
        # One row per call for a dynamic int8 model: only then is an answer independent of the texts beside it.
        self.rows_per_call = 1 if quantises_per_call(model_path) else batch_size
        self.input_names = [i.name for i in self.session.get_inputs()]
        blend = Blend.of_record(self.meta.get("decision"))
        # The bag-of-words baseline the model is mixed with (model.blend), when validation chose one.
        self.blend = BlendedScorer.load(blend, file_in_bundle(self.dir, blend.file), threads) if blend else None

    @property
    def needs_pairs(self) -> bool:
        """Whether the model reads a second text with each text."""
        return self.kind.reads_pairs

    def run_logits(self, encodings: list) -> list[np.ndarray]:
        """Logits per row in input order ([labels] per text, [tokens, labels] per NER row), batched by length.

        A row's logits do not depend on the batch it is in: a dynamic int8 model runs one row per call,
        and fp32 masks the padding (what is left is float rounding, well under 1e-6).
        """
        lengths = [len(e.ids) for e in encodings]
        out: list[np.ndarray] = [None] * len(encodings)  # type: ignore[list-item]
        for idx in length_buckets(lengths, self.rows_per_call):
            feed = pad_rows(
                {
                    "input_ids": [encodings[i].ids for i in idx],
                    "attention_mask": [encodings[i].attention_mask for i in idx],
                    "token_type_ids": [encodings[i].type_ids for i in idx],
                },
                self.pad_id,
            )
            logits = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.input_names})[0]
            for j, i in enumerate(idx):
                out[i] = logits[j, : lengths[i]] if self.kind.is_token_level else logits[j]
        return out

    def score(
        self, texts: list[str] | None = None, pairs: list[str] | None = None, words: list[list[str]] | None = None
    ) -> Scores:
        """Answers as arrays for raw texts (with second texts for pair models), or NER rows given as words.

        Texts go through the clean stage's normalisation first (NER text is not normalised there,
        nor here: entity spans index the caller's own text); with `max_chars`, a text longer than that
        once normalised raises TextsTooLong before anything is tokenised.
        """
        if self.kind.is_token_level:
            if words is None:
                words = [[t[a:b] for a, b in split_words(t)] for t in texts or []]
            encodings = encode_rows(self.tokenizer, words=words)
            assert self.labels is not None, "NER has a tag set (None only for regression)"
            outside = outside_id(self.labels)
            logits = [
                word_logits(row, e.word_ids, len(w), outside)
                for row, e, w in zip(self.run_logits(encodings), encodings, words)
            ]
        else:
            if texts is None:
                raise ValueError(f"a {self.task} model scores texts: give texts (words are for NER models)")
            self.check_pairs(texts, pairs)
            sent_texts, sent_pairs = texts, pairs
            texts = normalize_texts(list(texts), **self.normalize)
            pairs = normalize_texts(list(pairs), **self.normalize) if pairs is not None else None
            if self.max_chars is not None:  # before the tokenizer and the model, which cost by length
                long_texts = longer_than(list(sent_texts), texts, self.max_chars)
                long_pairs = longer_than(list(sent_pairs), pairs, self.max_chars) if sent_pairs and pairs else []
                if long_texts or long_pairs:
                    raise TextsTooLong(self.max_chars, long_texts, long_pairs)
            encodings = encode_rows(self.tokenizer, texts, pairs)
            if self.long_text.chunks:  # every window read, the document's logits aggregated: nothing cut
                windows, doc_ids = windows_of(encodings)
                logits = aggregate_windows(self.run_logits(windows), doc_ids, len(encodings), self.long_text.aggregate)
                if self.blend is not None:
                    logits = self.blend(texts, logits)
                return replace(
                    decode_logits(self.task, logits, self.labels, self.decision),
                    truncated=np.zeros(len(encodings), dtype=bool),
                )
            logits = self.run_logits(encodings)
            if self.blend is not None:
                logits = self.blend(texts, logits)
        # Truncation leaves the cut-off tokens in `overflowing`.
        return replace(
            decode_logits(self.task, logits, self.labels, self.decision),
            truncated=np.array([bool(e.overflowing) for e in encodings], dtype=bool),
        )

    def check_pairs(self, texts: list[str], pairs: list[str] | None) -> None:
        """Refuse a pair model without second texts, and second texts that do not pair up one to one."""
        if self.needs_pairs and pairs is None:
            raise ValueError("this model classifies text pairs: give a second text (text_pair) with each text")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} second texts: give one second text per text")

    def predict_frame(self, df) -> Scores:
        """Score a frame laid out like a clean split: `text` (and `text_pair`), or `tokens` for NER."""
        need = self.kind.input_columns
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(
                f"a {self.task} model scores frames with column(s) {need}; this one lacks {missing} "
                f"(it has {list(df.columns)})"
            )
        if self.kind.is_token_level:
            return self.score(words=[[str(w) for w in row] for row in df["tokens"]])
        pairs = [str(t) for t in df["text_pair"]] if "text_pair" in df.columns else None
        return self.score([str(t) for t in df["text"]], pairs)

    def predict(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """Predict a batch; each answer says whether its input was truncated at max_length."""
        if not texts:
            return []
        if self.kind.is_token_level:
            spans = [split_words(t) for t in texts]
            s = self.score(words=[[t[a:b] for a, b in sp] for t, sp in zip(texts, spans)])
            assert s.probabilities is not None and s.truncated is not None, "score gives NER probabilities and cuts"
            return [
                {"entities": entities_of(t, sp, tags, p), "truncated": bool(cut)}
                for t, sp, tags, p, cut in zip(texts, spans, s.predictions, s.probabilities, s.truncated)
            ]
        s = self.score(texts, pairs)
        assert s.truncated is not None, "score always says which inputs it cut"
        if self.kind.predicts_value:
            return [{"value": float(v), "truncated": bool(cut)} for v, cut in zip(s.predictions, s.truncated)]
        if self.kind.is_multi_label:
            assert self.labels is not None and s.probabilities is not None, "a multi-label model has labels"
            return [
                {
                    "labels": names,
                    "scores": {name: float(v) for name, v in zip(self.labels, p)},
                    "truncated": bool(cut),
                }
                for names, p, cut in zip(self.kind.answers(s.predictions, self.labels), s.probabilities, s.truncated)
            ]
        if not self.kind.is_single_label:
            raise self.kind.unsupported("answer for the service")
        assert self.labels is not None and s.probabilities is not None, "a classifier has labels and probabilities"
        return [
            {
                "label": self.labels[int(k)],
                "score": float(p[k]),
                "scores": {name: float(v) for name, v in zip(self.labels, p)},
                "truncated": bool(cut),
            }
            for k, p, cut in zip(s.predictions, s.probabilities, s.truncated)
        ]
