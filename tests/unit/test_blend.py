"""model.blend's parts without training: the bag of words as ONNX, the weight's choice, the mixture."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.inference.blend import BaselineScorer, Blend, bag_of_words_text, mix_logits
from tasks.modelling.baselines import bag_of_words_features, fit_linear, targets_of
from tasks.modelling.blend import choose_blend, export_bag_of_words

TEXTS = [
    "a wonderful, moving film",
    "dull and far too long",
    "fine, I guess",
    "the best thing this year",
    "awful awful awful",
    "Ça va très bien, naïve café",
    "don't stop: it's 3.5 stars!",
    "wonderful wonderful moving film film",
    "",
    "a",
]
LABELS = ["negative", "neutral", "positive"]


def fitted(tmp_path):
    """The baselines stage's bag of words fitted on a small three-class frame, and its splits."""
    labels = ["positive", "negative", "neutral", "positive", "negative", "positive", "neutral", "positive"]
    train = pd.DataFrame({"text": TEXTS[:8] * 4, "label": labels * 4})
    test = pd.DataFrame({"text": [*TEXTS, "unseen words entirely", "FILM Film film"], "label": "positive"})
    splits = {"train": train, "validation": train.iloc[:8], "test": test}
    x, vectorizer = bag_of_words_features(splits, 1000)
    y = {k: targets_of(v, "classification", LABELS) for k, v in splits.items()}
    model, _ = fit_linear("classification", x, y, "f1_macro", LABELS)
    return splits, x, vectorizer, model


def test_the_onnx_bag_of_words_answers_as_scikit_learn_does(tmp_path):
    """Repeated words (sublinear tf), accents, case, one-letter words and empty texts: the same probabilities."""
    splits, x, vectorizer, model = fitted(tmp_path)
    path = export_bag_of_words(vectorizer, model, list(splits["train"]["text"]), tmp_path / "bow.onnx")
    assert path is not None
    got = BaselineScorer(path).probabilities(list(splits["test"]["text"]))
    np.testing.assert_allclose(got, model.predict_proba(x["test"]), atol=1e-5)
    assert got.shape == (len(splits["test"]), 3)


def test_the_graph_would_differ_without_the_sublinear_fix(tmp_path, monkeypatch):
    """skl2onnx's log(tf + 1) moves a text with a repeated word: the export refuses such a graph."""
    import tasks.modelling.blend as blend

    splits, _, vectorizer, model = fitted(tmp_path)
    monkeypatch.setattr(blend, "fix_sublinear_tf", lambda graph: 0)
    monkeypatch.setattr(blend, "PARITY_ATOL", 1e-6)
    assert export_bag_of_words(vectorizer, model, list(splits["test"]["text"]), tmp_path / "bow.onnx") is None
    assert not (tmp_path / "bow.onnx").exists() and not (tmp_path / "bow.tmp").exists()


def test_words_are_scikit_learns_default_tokens():
    assert bag_of_words_text("Don't STOP, ça-va a b 3.5!") == "don stop ça va"


def test_a_perfect_baseline_takes_the_weight_and_a_perfect_model_keeps_it():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 3, 200)
    sure = np.full((200, 3), 0.02)
    sure[np.arange(200), refs] = 0.96
    noise = rng.normal(size=(200, 3)).astype(np.float32)
    blend, report = choose_blend(noise, sure, refs, "classification", LABELS, "f1_macro")
    assert blend is not None and blend.weight <= 0.1 and report["blend"] >= report["model"]
    assert "the bag-of-words baseline beats the fine-tuned model" in report["text"]
    exact = np.log(sure).astype(np.float32) * 5
    uniform = np.full((200, 3), 1 / 3)
    blend, report = choose_blend(exact, uniform, refs, "classification", LABELS, "f1_macro")
    assert blend is None and report["weight"] == 1.0 and "serves alone" in report["text"]


def test_the_mixture_is_the_weighted_mean_of_probabilities():
    logits = [np.array([2.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)]
    baseline = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    mixed = np.exp(np.stack(mix_logits(logits, baseline, Blend(0.25, 2.0))))
    model = np.exp(np.stack(logits) / 2.0)
    model /= model.sum(1, keepdims=True)
    np.testing.assert_allclose(mixed, 0.25 * model + 0.75 * baseline, rtol=1e-5)
    assert Blend.of_record({"blend": {"weight": 1.0}}) is None and Blend.of_record(None) is None
    assert Blend.of_record({"blend": {"weight": 0.4, "temperature": 1.5}}) == Blend(0.4, 1.5)


@pytest.mark.parametrize("task", ["regression", "multi_label"])
def test_only_single_label_text_classifiers_are_blended(tmp_path, task):
    from tasks.modelling.baselines import blends
    from tests.support import small_config

    cfg = small_config(tmp_path, "model.blend=auto")
    assert blends(cfg, pd.DataFrame({"text": ["x"]}))
    assert not blends(cfg, pd.DataFrame({"text": ["x"], "text_pair": ["y"]}))
    other = cfg.model_copy(update={"data": cfg.data.model_copy(update={"task": task})})
    assert not blends(other, pd.DataFrame({"text": ["x"]}))
