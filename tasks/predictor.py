"""The serving-side model: an ONNX bundle plus its tokenizer, answering texts without torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.io import read_json


class OnnxPredictor:
    """Loads a serving bundle (model.onnx or model.int8.onnx, tokenizer, finetune_flow.json)."""

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, model_file: str | None = None):
        from transformers import AutoTokenizer

        from tasks.export import session

        self.dir = Path(bundle_dir)
        self.meta = read_json(self.dir / "finetune_flow.json")
        self.task: str = self.meta["task"]
        self.labels: list[str] | None = self.meta["labels"]
        self.max_length: int = self.meta["max_length"]
        self.model_file = model_file or self.meta.get("serving_file", "model.onnx")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.dir))
        self.session = session(self.dir / self.model_file, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def _run(self, enc) -> np.ndarray:
        feed = {k: np.asarray(enc[k], dtype=np.int64) for k in self.input_names if k in enc}
        return self.session.run(["logits"], feed)[0]

    def predict(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """Predict a batch; each answer says whether its input was truncated."""
        from tasks.predict import softmax

        if self.task == "ner":
            return [self._predict_entities(t) for t in texts]
        full = self.tokenizer(texts, pairs, truncation=False)
        truncated = [len(ids) > self.max_length for ids in full["input_ids"]]
        enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length, padding=True)
        logits = self._run(enc)
        out = []
        for row, cut in zip(logits, truncated):
            if self.task == "regression":
                out.append({"value": float(row[0]), "truncated": cut})
            else:
                p = softmax(row)
                k = int(p.argmax())
                out.append({"label": self.labels[k], "score": float(p[k]),
                            "scores": {name: float(v) for name, v in zip(self.labels, p)}, "truncated": cut})
        return out

    def _predict_entities(self, text: str) -> dict:
        """Entities with character spans, from BIO tags on the first sub-token of each word."""
        from tasks.predict import softmax

        enc = self.tokenizer([text], truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        full_len = len(self.tokenizer(text, truncation=False)["input_ids"])
        offsets = enc.pop("offset_mapping")[0]
        probs = softmax(self._run(enc)[0])
        word_ids = enc.word_ids(0)
        entities, current, previous = [], None, None
        for t, wid in enumerate(word_ids):
            if wid is None or wid == previous:
                if wid is not None and current is not None:
                    current["end"] = int(offsets[t][1])  # later sub-tokens extend the word
                previous = wid
                continue
            previous = wid
            k = int(probs[t].argmax())
            tag = self.labels[k]
            start, end = int(offsets[t][0]), int(offsets[t][1])
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
        return {"entities": entities, "truncated": full_len > self.max_length}
