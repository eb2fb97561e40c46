"""Batch prediction over a frame with any backend (PyTorch, ONNX Runtime fp32 or int8).

Evaluation, export parity, the int8 gate, promotion re-scoring and serving all
predict the same way; only the `forward` callable differs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from tasks.encode import pad_batch

Forward = Callable[[dict[str, np.ndarray]], np.ndarray]


def torch_forward(model) -> Forward:
    """A forward callable for a PyTorch model (eval mode, no grad)."""
    import torch

    model.eval()
    device = next(model.parameters()).device

    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(device) for k, v in batch.items()}
            return model(**inputs).logits.float().cpu().numpy()

    return forward


def onnx_forward(session) -> Forward:
    """A forward callable for an ONNX Runtime session; feeds only the inputs the graph declares."""
    names = [i.name for i in session.get_inputs()]

    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: batch[k] for k in names if k in batch}
        if "token_type_ids" in names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(batch["input_ids"])
        return session.run(["logits"], feed)[0]

    return forward


def encode_inputs(tokenizer, df: pd.DataFrame, task: str, max_length: int):
    """Tokenise a frame for inference; returns the encoding (with word ids for NER)."""
    if task == "ner":
        return tokenizer(list(df["tokens"]), is_split_into_words=True, truncation=True, max_length=max_length)
    pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
    return tokenizer(list(df["text"]), pairs, truncation=True, max_length=max_length)


def predict_logits(forward: Forward, tokenizer, df: pd.DataFrame, task: str, max_length: int,
                   batch_size: int = 64, outside: int = 0) -> list[np.ndarray]:
    """Logits per row: [num_labels] per text, or [num_words, num_labels] per NER sentence.

    outside: the id of the NER "O" label, which words cut off by truncation are given.
    """
    enc = encode_inputs(tokenizer, df, task, max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    out: list[np.ndarray | None] = [None] * len(df)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_batch({k: [enc[k][i] for i in idx] for k in keys}, tokenizer.pad_token_id or 0)
        logits = forward(batch)
        for j, i in enumerate(idx):
            out[i] = logits[j, : lengths[i]] if task == "ner" else logits[j]
    if task == "ner":
        out = [word_logits(out[i], enc.word_ids(i), len(df["tokens"].iloc[i]), outside) for i in range(len(df))]
    return out


def word_logits(token_logits: np.ndarray, word_ids: list, n_words: int, outside: int = 0) -> np.ndarray:
    """Each word's logits are its first sub-token's; a word cut off by truncation gets a row picking `outside` ("O")."""
    words = np.zeros((n_words, token_logits.shape[-1]), dtype=np.float32)
    seen = set()
    for t, wid in enumerate(word_ids):
        if wid is not None and wid not in seen:
            seen.add(wid)
            words[wid] = token_logits[t]
    if len(seen) < n_words:
        words[sorted(set(range(n_words)) - seen), outside] = 1.0
    return words


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def decode(task: str, logits: list[np.ndarray], labels: list[str] | None) -> tuple[list, list]:
    """Turn logits into predictions and confidences, per task kind."""
    if task == "regression":
        return [float(np.ravel(l)[0]) for l in logits], [None] * len(logits)
    if task == "ner":
        preds = [[labels[int(k)] for k in l.argmax(-1)] for l in logits]
        conf = [float(softmax(l).max(-1).mean()) if len(l) else 1.0 for l in logits]
        return preds, conf
    probs = [softmax(l) for l in logits]
    return [int(p.argmax()) for p in probs], [float(p.max()) for p in probs]


def references_of(df: pd.DataFrame, task: str, labels: list[str] | None) -> list:
    """Ground truth in the form `decode` predicts."""
    if task == "regression":
        return [float(v) for v in df["label"]]
    if task == "ner":
        return [list(t) for t in df["tags"]]
    label2id = {name: i for i, name in enumerate(labels)}
    return [label2id[str(v)] for v in df["label"]]


def score_frame(forward: Forward, tokenizer, df: pd.DataFrame, task: str, labels: list[str] | None,
                max_length: int, batch_size: int = 64) -> dict:
    """Predict a labelled frame and compute the task's metrics."""
    from tasks.metrics import compute_metrics_for

    outside = labels.index("O") if task == "ner" and "O" in labels else 0  # declared labels may order it anywhere
    logits = predict_logits(forward, tokenizer, df, task, max_length, batch_size, outside)
    preds, conf = decode(task, logits, labels)
    refs = references_of(df, task, labels)
    metrics = compute_metrics_for(task, preds, refs, labels)
    return {"metrics": metrics, "predictions": preds, "confidence": conf, "references": refs, "logits": logits}
