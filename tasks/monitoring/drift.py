"""Drift statistics between a reference sample (the champion's held-out data) and a window of traffic.

Input drift: text length and out-of-vocabulary rate (two-sample Kolmogorov-Smirnov, scipy), and the
texts' sentence embeddings (kernel two-sample test, MMD with an RBF kernel and a permutation p-value).
Prediction drift: class shares (chi-square, scipy) or the predicted value (KS); confidence drift (KS).
The tests share one false-alarm budget: each is run at p_value / number_of_tests (Bonferroni), so a
window from the reference distribution raises an alarm with probability at most p_value.

Embeddings: the serving bundle's ONNX graph outputs only `logits` (tasks/modelling/export.py), so the
embedding is the packaged all-MiniLM-L6-v2's mean-pooled last hidden state, the sentence embedding
that model was trained to produce; it is the same for every champion, so windows compare across versions.

Evidently (0.7) was considered: its column drift tests are the same scipy tests, it cannot compute
the embeddings offline for us, and it adds ~25 packages (telemetry, NLTK, a web server) to the image.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.kinds import kind_of
from tasks.modelling.encode import resolve_model_path

_WORDS = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class DriftTest:
    name: str
    kind: str  # "input" | "prediction" | "confidence"
    method: str
    statistic: float
    p_value: float
    alpha: float

    @property
    def drifted(self) -> bool:
        return self.p_value < self.alpha


@dataclass(frozen=True)
class DriftReport:
    reference_rows: int
    current_rows: int
    p_value: float
    tests: list[DriftTest] = field(default_factory=list)
    summaries: dict = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(t.drifted for t in self.tests)

    @property
    def reasons(self) -> list[str]:
        return [f"{t.name} drift ({t.method} p={t.p_value:.2g} < {t.alpha:.2g})" for t in self.tests if t.drifted]

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow: drift_<test>_p, drift_<test>_statistic, drift_detected, and the summaries."""
        out: dict[str, float] = {
            "drift_detected": float(self.drifted),
            "rows_current": float(self.current_rows),
            "rows_reference": float(self.reference_rows),
        }
        for t in self.tests:
            out[f"drift_{t.name}_p"] = t.p_value
            out[f"drift_{t.name}_statistic"] = t.statistic
        out.update(self.summaries)
        return out

    def as_dict(self) -> dict:
        d = asdict(self)
        d["drifted"], d["reasons"] = self.drifted, self.reasons
        return d


def word_counts(texts: pd.Series) -> np.ndarray:
    return np.array([len(_WORDS.findall(t)) for t in texts], dtype=float)


def oov_rates(texts: pd.Series, vocabulary: frozenset[str], lowercase: bool = True) -> np.ndarray:
    """Share of each text's words that are not whole tokens of the model's vocabulary (split into pieces)."""
    rates = np.zeros(len(texts))
    for i, t in enumerate(texts):
        words = _WORDS.findall(t.lower() if lowercase else t)
        if words:
            rates[i] = sum(w not in vocabulary for w in words) / len(words)
    return rates


def tokenizer_vocabulary(folder: str | Path) -> tuple[frozenset[str], bool]:
    """The whole-word entries of a tokenizer.json's vocabulary, and whether it lowercases."""
    spec = json.loads((Path(folder) / "tokenizer.json").read_text())
    vocab = spec["model"].get("vocab", {})
    words = vocab.keys() if isinstance(vocab, dict) else (v[0] for v in vocab)  # WordPiece dict; Unigram list
    normalizer = json.dumps(spec.get("normalizer") or {})
    lowercase = '"lowercase": true' in normalizer or '"Lowercase"' in normalizer
    return frozenset(w for w in words if not w.startswith("##")), lowercase


@lru_cache(maxsize=1)
def _embedder():
    # heavy (torch, transformers): loaded when this runs, so importing tasks.monitoring.drift stays light
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path("minilm")
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval(), torch


def embed_texts(texts: list[str], max_length: int = 64, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the packaged MiniLM, L2-normalised (sentence-transformers' recipe)."""
    tokenizer, model, torch = _embedder()
    out = []
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: little padding
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = [texts[i] for i in order[start : start + batch_size]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    emb = np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)
    result = np.empty_like(emb)
    result[order] = emb
    return result


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """Squared maximum mean discrepancy (RBF kernel, median-distance bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    bandwidth = np.median(d2[np.triu_indices_from(d2, k=1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    signs = np.empty((permutations + 1, n + m))
    base = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    signs[0] = base
    for i in range(1, permutations + 1):
        signs[i] = rng.permutation(base)
    stats = np.einsum("ij,jk,ik->i", signs, k, signs)  # a^T K a for each assignment a
    p = (1 + np.sum(stats[1:] >= stats[0])) / (permutations + 1)
    return float(stats[0]), float(p)


def _ks(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    # heavy (scipy): loaded when this runs, so importing tasks.monitoring.drift stays light
    from scipy.stats import ks_2samp

    r = ks_2samp(a, b)
    return float(r.statistic), float(r.pvalue)


def _chi2(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    # heavy (scipy): loaded when this runs, so importing tasks.monitoring.drift stays light
    from scipy.stats import chi2_contingency

    classes = sorted(set(reference) | set(current))
    table = np.array([[int((reference == c).sum()) for c in classes], [int((current == c).sum()) for c in classes]])
    if len(classes) < 2:
        return 0.0, 1.0
    r = chi2_contingency(table)
    return float(r.statistic), float(r.pvalue)


def _shares(values: pd.Series, prefix: str) -> dict[str, float]:
    return {f"{prefix}_share_{k}": float(v) for k, v in values.value_counts(normalize=True).items()}


def label_occurrences(predictions: pd.Series) -> pd.Series:
    """Logged label sets (JSON lists) as one entry per label given, "(none)" for an empty answer."""
    sets = predictions.dropna().map(json.loads)
    return pd.Series([name for names in sets for name in (names or ["(none)"])], dtype=object)


def compare_windows(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    vocabulary: frozenset[str],
    lowercase: bool = True,
    p_value: float = 0.05,
    embedding_rows: int = 500,
    permutations: int = 200,
    seed: int = 0,
    task: str = "classification",
    embed=embed_texts,
) -> DriftReport:
    """Run every drift test that the columns allow (text; prediction and confidence when present).

    Frames: `text`, optional `prediction` (label string, or value for regression), `confidence`.
    embed: texts -> embeddings (the packaged MiniLM by default).
    """
    raw: list[tuple[str, str, str, tuple[float, float]]] = []
    summaries: dict[str, float] = {}
    ref_text = reference["text"].dropna().astype(str)
    cur_text = current["text"].dropna().astype(str)  # texts are logged only with FTFLOW_LOG_TEXTS
    if len(cur_text) >= 2 and len(ref_text) >= 2:
        ref_len, cur_len = word_counts(ref_text), word_counts(cur_text)
        ref_oov, cur_oov = oov_rates(ref_text, vocabulary, lowercase), oov_rates(cur_text, vocabulary, lowercase)
        raw.append(("length", "input", "ks", _ks(ref_len, cur_len)))
        raw.append(("oov_rate", "input", "ks", _ks(ref_oov, cur_oov)))
        rng = np.random.default_rng(seed)
        ref_pick = rng.choice(len(ref_text), min(embedding_rows, len(ref_text)), replace=False)
        cur_pick = rng.choice(len(cur_text), min(embedding_rows, len(cur_text)), replace=False)
        x = embed([ref_text.iloc[i] for i in ref_pick])
        y = embed([cur_text.iloc[i] for i in cur_pick])
        raw.append(("embedding", "input", "mmd", mmd_test(x, y, permutations, seed)))
        summaries |= {
            "length_mean_reference": float(ref_len.mean()),
            "length_mean_current": float(cur_len.mean()),
            "oov_rate_reference": float(ref_oov.mean()),
            "oov_rate_current": float(cur_oov.mean()),
        }
    if "prediction" in reference and "prediction" in current and current["prediction"].notna().any():
        kind = kind_of(task)
        if kind.predicts_value:
            a, b = reference["prediction"].astype(float).to_numpy(), current["prediction"].astype(float).to_numpy()
            raw.append(("prediction", "prediction", "ks", _ks(a, b)))
            summaries |= {"prediction_mean_reference": float(a.mean()), "prediction_mean_current": float(b.mean())}
        elif kind.is_single_label:
            raw.append(("prediction", "prediction", "chi2", _chi2(reference["prediction"], current["prediction"])))
            summaries |= _shares(reference["prediction"], "reference") | _shares(current["prediction"], "current")
        elif kind.is_multi_label:  # how often each label is given (and none), not which combinations
            a, b = label_occurrences(reference["prediction"]), label_occurrences(current["prediction"])
            raw.append(("prediction", "prediction", "chi2", _chi2(a, b)))
            summaries |= _shares(a, "reference") | _shares(b, "current")
        else:
            raise kind.unsupported("prediction drift test")
    if "confidence" in reference and "confidence" in current and current["confidence"].notna().any():
        a, b = reference["confidence"].dropna().to_numpy(), current["confidence"].dropna().to_numpy()
        raw.append(("confidence", "confidence", "ks", _ks(a, b)))
        summaries |= {"confidence_mean_reference": float(a.mean()), "confidence_mean_current": float(b.mean())}
    alpha = p_value / max(len(raw), 1)
    tests = [DriftTest(name, kind, method, stat, p, alpha) for name, kind, method, (stat, p) in raw]
    return DriftReport(len(reference), len(current), p_value, tests, summaries)
