"""The inference core with real parts: the packaged MiniLM exported to ONNX, ONNX Runtime, `tokenizers`,
the clean stage's normalisation, MLflow's registry (the temporary SQLite store of conftest).

The bundle's classification head is freshly initialised from a fixed seed: the encoder is real, and
the checks compare paths (torch vs core, batch sizes, fp32 vs int8), not model quality.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support import ROOT

LABELS = ["negative", "positive"]
# Raw texts as users send them: ligatures and full-width letters (NFKC changes them, BERT's own
# normaliser does not), runs of odd whitespace, zero-width and control characters, lengths from 1 word to past max_length.
RAW_TEXTS = [
    "a ﬁne ﬁlm",
    "Ｆｕｌｌ  width\u3000and\ttabs",
    "dull",
    "x\u200by\x07z and a zero-width space",
    "  a long and winding story that never quite ends, " + "and then goes on and on " * 6,
    "ok",
    "ﬂat, ﬂavourless and ﬁnally tedious",
    "a delight from start to finish",
    "Ｔｈｅ ｂｅｓｔ",
    "meh",
]


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory):
    """The packaged MiniLM with a seeded 2-label head, and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.modelling.encode import resolve_model_path

    base = resolve_model_path("minilm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    with torch.no_grad():  # a head large enough that the two classes both occur on these texts
        model.classifier.weight.mul_(40.0)
    return model.eval(), AutoTokenizer.from_pretrained(base)


@pytest.fixture(scope="module")
def bundle(torch_model, tmp_path_factory) -> Path:
    """A serving bundle as the export stage writes it: fp32 + int8 ONNX, tokenizer files, finetune_flow.json."""
    from tasks.modelling.export import FP32, INT8, export_onnx, quantize_int8

    model, tok = torch_model
    out = tmp_path_factory.mktemp("bundle")
    export_onnx(model, tok, out / FP32, 17)
    quantize_int8(out / FP32, out / INT8)
    tok.save_pretrained(str(out))
    (out / "finetune_flow.json").write_text(
        json.dumps(
            {
                "task": "classification",
                "labels": LABELS,
                "max_length": 32,
                "serving_file": FP32,
                "normalize": {"unicode": True, "collapse_whitespace": True},
            }
        )
    )
    return out


def torch_scores(torch_model, texts: list[str]):
    """The PyTorch model's answers on texts cleaned by the clean stage (what evaluation scores)."""
    from tasks.config import DataConfig
    from tasks.data.clean import normalize_text
    from tasks.modelling.predict import score_frame, torch_forward

    model, tok = torch_model
    clean = normalize_text(pd.Series(texts), DataConfig())
    df = pd.DataFrame({"text": list(clean), "label": ["negative"] * len(texts)})
    return score_frame(torch_forward(model), tok, df, "classification", LABELS, 32, batch_size=4)["scores"]


def test_the_core_answers_without_torch_or_onnx(bundle):
    """The serving image has neither torch nor the `onnx` package: loading a bundle (fp32 and int8) and
    answering must import neither."""
    code = (
        "import sys\n"
        "import tasks.inference.predictor, tasks.inference.compare, tasks.inference.decode\n"
        "from tasks.inference.predictor import OnnxPredictor\n"
        f"for f in ('model.onnx', 'model.int8.onnx'): OnnxPredictor({str(bundle)!r}, model_file=f).predict(['fine'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'onnx', 'tasks.modelling.metrics') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_length_buckets_sort_by_length_and_cover_every_row_once():
    from tasks.inference.batching import length_buckets

    lengths = [5, 2, 9, 2, 7, 1, 9]
    buckets = length_buckets(lengths, 3)
    assert [len(b) for b in buckets] == [3, 3, 1]
    flat = np.concatenate(buckets)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert flat.tolist()[:3] == [5, 1, 3]  # equal lengths keep their input order
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets(lengths, 0)


def test_bucketed_batches_restore_order_and_answer_as_batch_one(bundle):
    from tasks.inference.predictor import OnnxPredictor

    bucketed = OnnxPredictor(bundle, batch_size=3).score(RAW_TEXTS)
    single = OnnxPredictor(bundle, batch_size=1)
    one_by_one = [single.score([t]) for t in RAW_TEXTS]
    assert bucketed.predictions.tolist() == [s.predictions[0] for s in one_by_one]
    assert np.abs(bucketed.probabilities - np.stack([s.probabilities[0] for s in one_by_one])).max() < 1e-5
    assert bucketed.truncated.tolist() == [s.truncated[0] for s in one_by_one]
    assert bucketed.truncated[4] and not bucketed.truncated[2]  # only the long text passes max_length
    # predict() answers in the service's shape, from the same path
    answers = OnnxPredictor(bundle, batch_size=3).predict(RAW_TEXTS)
    assert [a["label"] for a in answers] == bucketed.answers()
    assert [a["score"] for a in answers] == pytest.approx(bucketed.probabilities.max(-1).tolist(), abs=1e-7)
    assert len(set(bucketed.answers())) == 2  # both labels occur: a label mix-up would show
    with pytest.raises(ValueError, match=r"column\(s\) \['text'\]; this one lacks \['text'\]"):
        single.predict_frame(pd.DataFrame({"sentence": RAW_TEXTS}))


def test_int8_answers_do_not_depend_on_the_batch(bundle):
    """Dynamic int8 takes one activation scale per call: the core runs it one row per call, so a text's
    answer is bit-for-bit the same alone, in a batch, or among other texts (service = batch scoring)."""
    from tasks.inference.batching import pad_rows
    from tasks.inference.normalize import normalize_texts
    from tasks.inference.predictor import OnnxPredictor
    from tasks.inference.session import create_session, quantises_per_call
    from tasks.inference.tokenizer import encode_rows
    from tasks.modelling.export import FP32, INT8

    assert quantises_per_call(bundle / INT8) and not quantises_per_call(bundle / FP32)
    import onnx  # the byte search agrees with the parsed graph (the serving image has no `onnx`)

    assert any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(bundle / INT8)).graph.node)
    batched = OnnxPredictor(bundle, model_file=INT8, batch_size=64)
    assert batched.rows_per_call == 1 and OnnxPredictor(bundle, batch_size=64).rows_per_call == 64
    texts = RAW_TEXTS * 4
    together = batched.score(texts)
    alone = np.stack([batched.score([t]).probabilities[0] for t in RAW_TEXTS])
    assert np.array_equal(together.probabilities, np.tile(alone, (4, 1)))
    # Why: the same rows in one call of the int8 graph answer differently than one by one.
    encodings = encode_rows(batched.tokenizer, normalize_texts(RAW_TEXTS))
    feed = pad_rows(
        {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        },
        batched.pad_id,
    )
    one_call = create_session(bundle / INT8).run(["logits"], {k: feed[k] for k in batched.input_names})[0]
    rows = batched.run_logits(encodings)
    assert np.abs(one_call - np.stack(rows)).max() > 1e-4


def test_core_normalises_like_the_clean_stage():
    from tasks.config import DataConfig
    from tasks.data.clean import normalize_text
    from tasks.inference.normalize import normalize_texts

    cfg = DataConfig()
    assert normalize_texts(RAW_TEXTS) == list(normalize_text(pd.Series(RAW_TEXTS), cfg))
    cfg.clean.collapse_whitespace = False
    kept = normalize_texts(RAW_TEXTS, collapse_whitespace=False)
    assert kept == list(normalize_text(pd.Series(RAW_TEXTS), cfg)) and "  " in kept[1]


def test_parity_on_raw_texts_end_to_end(torch_model, bundle):
    """Raw texts through the core vs the torch model on clean texts: same label, probabilities within 1e-4."""
    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling.export import check_parity

    reference = torch_scores(torch_model, RAW_TEXTS)
    core = OnnxPredictor(bundle, batch_size=4).score(RAW_TEXTS)
    parity = check_parity(reference, core, 1e-4)
    assert parity["passed"] and parity["changed_rows"] == 0 and parity["rows"] == len(RAW_TEXTS), parity
    # The check can fail: skipping the clean stage's normalisation changes what the model reads.
    unnormalised = OnnxPredictor(bundle, batch_size=4)
    unnormalised.normalize = {"unicode": False, "collapse_whitespace": False}
    broken = check_parity(reference, unnormalised.score(RAW_TEXTS), 1e-4)
    assert not broken["passed"] and broken["max_abs_diff"] > 1e-4, broken


def test_int8_gate_reports_the_share_of_changed_answers(bundle):
    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling.export import INT8, gate_int8
    from tasks.modelling.predict import metrics_of

    df = pd.DataFrame({"text": RAW_TEXTS * 3, "label": (LABELS * 15)[:30]})
    fp32 = OnnxPredictor(bundle).predict_frame(df)
    int8 = OnnxPredictor(bundle, model_file=INT8).predict_frame(df)
    gate = gate_int8(metrics_of(fp32, df), metrics_of(int8, df), "f1", 0.01, fp32, int8)
    by_hand = sum(a != b for a, b in zip(fp32.answers(), int8.answers()))
    assert gate["changed_rows"] == by_hand and gate["rows"] == 30
    assert gate["changed_share"] == pytest.approx(by_hand / 30)
    assert 0 < gate["max_abs_diff"] < 0.5  # int8 moves probabilities a little, never by half
    # Known differences: one of four labels flips.
    from tasks.inference.decode import Scores

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    a = Scores("classification", LABELS, np.array([0, 1, 1, 0]), probs)
    b = Scores("classification", LABELS, np.array([0, 0, 1, 0]), probs[[0, 3, 2, 3]])
    flipped = gate_int8({"f1": 0.8}, {"f1": 0.7}, "f1", 0.01, a, b)
    assert (flipped["changed_rows"], flipped["changed_share"], flipped["passed"]) == (1, 0.25, False)


def test_compare_answers_for_ner_and_regression():
    from tasks.inference.compare import compare_answers
    from tasks.inference.decode import Scores

    p = [np.array([[0.9, 0.1], [0.2, 0.8]]), np.zeros((0, 2))]
    a = Scores("ner", ["O", "B-LOC"], [["O", "B-LOC"], []], p)
    b = Scores("ner", ["O", "B-LOC"], [["O", "O"], []], [np.array([[0.9, 0.1], [0.6, 0.4]]), np.zeros((0, 2))])
    assert compare_answers(a, b, 1e-4) == {
        "rows": 2,
        "changed_rows": 1,
        "changed_share": 0.5,
        "max_abs_diff": pytest.approx(0.4),
    }
    r1 = Scores("regression", None, np.array([1.0, 2.0, 3.0]), None)
    r2 = Scores("regression", None, np.array([1.0, 2.05, 3.5]), None)
    assert compare_answers(r1, r2, 0.1)["changed_rows"] == 1
    with pytest.raises(ValueError, match="same rows"):
        compare_answers(r1, Scores("regression", None, np.array([1.0]), None), 0.1)


def test_registered_version_loads_from_code_without_pickle(bundle, tmp_path, monkeypatch):
    """Models-from-code: no pickled object in the model, no CloudPickle warning, loads with pickle disallowed."""
    import mlflow.pyfunc

    from tasks.inference.predictor import OnnxPredictor
    from tasks.platform import tracking
    from tasks.registry.register import save_serving_model

    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # on MLflow's own logger: it does not propagate to pytest's caplog
    logging.getLogger("mlflow").addHandler(handler)
    try:
        local = save_serving_model(bundle, tmp_path / "model", RAW_TEXTS[:2], "classification")
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert not [r.getMessage() for r in seen if "pickle" in r.getMessage().lower()]
    assert not list(local.glob("*.pkl")) and (local / "pyfunc_model.py").exists()
    c = tracking.client()
    run_id = c.create_run(tracking.ensure_experiment("tests-inference")).info.run_id
    c.log_artifacts(run_id, str(local), "model")
    c.create_registered_model("test-inference")
    mv = c.create_model_version("test-inference", source=f"{c.get_run(run_id).info.artifact_uri}/model", run_id=run_id)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a pickled model would refuse to load
    model = mlflow.pyfunc.load_model(f"models:/test-inference/{mv.version}")
    out = model.predict(pd.DataFrame({"text": RAW_TEXTS}))
    direct = OnnxPredictor(bundle).predict(RAW_TEXTS)
    assert out["label"].tolist() == [d["label"] for d in direct]
    assert out["score"].tolist() == pytest.approx([d["score"] for d in direct], abs=1e-6)
    assert json.loads(out["scores"][0]).keys() == set(LABELS)
