"""Long documents read whole (model.long_text: chunk): windows, aggregation, and one real run end to end.

The unit tests check the windows against the untruncated tokenisation and the aggregation against
sums done by hand; the slow test trains on real long documents (the packaged convention speeches),
checks export parity on them (PyTorch windows vs the inference core's windows) and asks the HTTP
service for a speech, whose answer must be the mean of its windows' logits computed here by hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.config import ConfigError, load_config
from tasks.inference.windows import LongText, aggregate_windows, long_text_of, windows_of
from tests.integration.test_inference import bundle, torch_model  # noqa: F401  (fixtures: an untrained head, exported)
from tests.support import small_config

LONG = " ".join(f"sentence {i} says something rather different about topic{i % 7}." for i in range(60))


@pytest.fixture(scope="module")
def tokenizers():
    """The packaged MiniLM's tokenizer twice: `tokenizers` as the core loads it, and transformers' for training."""
    from tasks.inference.tokenizer import load_tokenizer as load_core
    from tasks.modelling.encode import load_tokenizer as load_hf
    from tasks.modelling.encode import resolve_model_path

    path = Path(resolve_model_path("minilm"))
    return {"path": path, "hf": load_hf(str(path)), "core": lambda n, s: load_core(path, n, s)}


def content(ids: list[int]) -> list[int]:
    return ids[1:-1]  # [CLS] ... [SEP]


def test_windows_cover_the_whole_document_with_the_stride(tokenizers):
    from tasks.modelling.encode import encode_frame

    max_length, stride = 32, 8
    core = tokenizers["core"](max_length, stride)
    full = content(tokenizers["core"](100_000, 0).encode(LONG).ids)
    windows, doc_ids = windows_of(core.encode_batch([LONG, "a short one"]))
    assert doc_ids[-1] == 1 and doc_ids.count(1) == 1 and len(windows) > 2
    ids = [w.ids for w in windows if w is not windows[-1]]
    assert all(len(w) <= max_length and w[0] == 101 and w[-1] == 102 for w in ids)  # each window framed
    for a, b in itertools.pairwise(ids):
        assert content(a)[-stride:] == content(b)[:stride]  # consecutive windows share `stride` tokens
    rebuilt = content(ids[0]) + [t for w in ids[1:] for t in content(w)[stride:]]
    assert rebuilt == full  # nothing skipped, nothing read twice beyond the overlap

    # Training's windows (transformers) are the core's windows, each with its document's label.
    df = pd.DataFrame({"text": [LONG, "a short one"], "label": ["b", "a"]})
    enc = encode_frame(tokenizers["hf"], df, "classification", ["a", "b"], max_length, stride=stride)
    assert enc["input_ids"] == [w.ids for w in windows] and enc["document"] == doc_ids
    assert enc["labels"] == [1] * (len(windows) - 1) + [0]


def test_aggregate_mean_and_max_by_hand():
    # Windows in bucket order, not document order: documents 1, 0, 1, 2, 0.
    logits = [
        np.array([1.0, -1.0]),
        np.array([0.5, 0.5]),
        np.array([3.0, 1.0]),
        np.array([-2.0, 4.0]),
        np.array([1.5, -0.5]),
    ]
    docs = [1, 0, 1, 2, 0]
    mean = aggregate_windows(logits, docs, 3, "mean")
    assert np.allclose(mean, [[1.0, 0.0], [2.0, 0.0], [-2.0, 4.0]])
    top = aggregate_windows(logits, docs, 3, "max")
    assert np.allclose(top, [[1.5, 0.5], [3.0, 1.0], [-2.0, 4.0]])
    values = aggregate_windows([np.array([0.2]), np.array([0.6]), np.array([-1.0])], [0, 0, 1], 2, "mean")
    assert np.allclose(values, [[0.4], [-1.0]])  # regression: one value per window
    with pytest.raises(ValueError, match="1 documents lack one"):
        aggregate_windows(logits, docs, 4, "mean")
    with pytest.raises(ValueError, match="'mean' or 'max'"):
        aggregate_windows(logits, docs, 3, "median")


def test_config_defaults_and_refusals():
    cfg = load_config(None, ["model.long_text=chunk", "model.max_length=256"])
    assert long_text_of(cfg.model) == LongText("chunk", 64, "mean")
    assert long_text_of(load_config(None, []).model) == LongText()  # truncate by default
    with pytest.raises(ConfigError, match="not ner; set model.long_text to truncate"):
        load_config(None, ["model.long_text=chunk", "data.task=ner"])
    with pytest.raises(ConfigError, match="not pair_classification"):
        load_config(None, ["model.long_text=chunk", "data.task=pair_classification", "data.text_pair_column=b"])
    with pytest.raises(ConfigError, match="more than half of model.max_length"):
        load_config(None, ["model.long_text=chunk", "model.max_length=64", "model.stride=40"])


@pytest.mark.parametrize("aggregate", ["mean", "max"])
def test_core_and_torch_aggregate_the_same_windows(torch_model, bundle, tmp_path, aggregate):  # noqa: F811  (the imported fixtures, asked for by name)
    """Export parity on long documents, for both aggregations: the core's windows and PyTorch's agree."""
    import json
    import shutil

    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling.export import check_parity
    from tasks.modelling.predict import score_frame, torch_forward

    chunked = tmp_path / "bundle"
    shutil.copytree(bundle, chunked)
    meta = json.loads((chunked / "finetune_flow.json").read_text())
    meta["long_text"] = {"mode": "chunk", "stride": 8, "aggregate": aggregate}
    (chunked / "finetune_flow.json").write_text(json.dumps(meta))
    texts = [LONG, "short and sweet", LONG[:400], " ".join(reversed(LONG.split()))]
    core = OnnxPredictor(chunked, model_file="model.onnx").predict_frame(pd.DataFrame({"text": texts}))
    model, tok = torch_model
    df = pd.DataFrame({"text": texts, "label": ["negative"] * len(texts)})
    reference = score_frame(
        torch_forward(model),
        tok,
        df,
        "classification",
        meta["labels"],
        32,
        4,
        long_text=LongText("chunk", 8, aggregate),
    )["scores"]
    assert check_parity(reference, core, 1e-4)["passed"]
    assert not core.truncated.any()  # every window read
    truncating = OnnxPredictor(bundle, model_file="model.onnx").predict_frame(pd.DataFrame({"text": texts}))
    assert truncating.truncated.tolist() == [True, False, True, True]  # a bundle without the record truncates
    assert np.abs(truncating.probabilities - core.probabilities)[[0, 2, 3]].max() > 1e-3  # and answers otherwise


def test_convention_speeches_are_packaged():
    from tasks.config import SourceConfig
    from tasks.data.collect import read_source

    df = read_source(SourceConfig(kind="package", name="convention_speeches"))
    assert len(df) == 189 and df["label"].value_counts().to_dict() == {"democrat": 123, "republican": 66}
    assert df["text"].str.split().str.len().mean() > 600


@pytest.mark.slow
def test_chunked_run_end_to_end_on_speeches(tmp_path):
    """Train on windows of real speeches; evaluation, export parity and the service answer per document."""
    import httpx

    from deploy.app import create_app
    from tasks.inference.decode import softmax
    from tasks.inference.predictor import OnnxPredictor
    from tasks.inference.tokenizer import load_tokenizer
    from tasks.io import read_frame, read_json
    from tests.integration.test_serve import running
    from tests.integration.test_tasks_e2e import run_pipeline

    cfg = small_config(
        tmp_path,
        "data.source.name=convention_speeches",
        "data.labels=[democrat, republican]",
        "data.max_rows=40",
        "data.validation.min_rows=20",
        "data.validation.min_class_rows=0",
        "model.long_text=chunk",
        "model.stride=8",
        "model.aggregate=mean",
        "training.max_steps=4",
    )
    clean_ref, evaluation, exported = run_pipeline(cfg, tmp_path / "run")
    test = read_frame(clean_ref.splits["test"])
    assert len(test) >= 2 and test["text"].str.len().min() > 200  # whole speeches, none quarantined
    history = read_json(tmp_path / "run" / "train_summary.json")["log_history"]
    [val] = [h for h in history if "eval_loss" in h]  # validation metrics count documents, not windows
    documents = clean_ref.report["rows_out"]["validation"]
    assert val["eval_support_democrat"] + val["eval_support_republican"] == documents
    predictions = pd.read_parquet(Path(evaluation.dir) / "predictions.parquet")
    assert len(predictions) == len(test)  # one answer per document, not per window
    assert exported.parity["passed"] and exported.parity["rows"] == len(test), exported.parity
    meta = read_json(Path(exported.dir) / "finetune_flow.json")
    assert meta["long_text"] == {"mode": "chunk", "stride": 8, "aggregate": "mean"}
    assert "windows of 32 tokens sharing 8" in Path(evaluation.files["model_card"]).read_text()

    # By hand: every window of one speech through the serving file (the core's batches), logits averaged.
    speech = test["text"].iloc[0][:6000]
    predictor = OnnxPredictor(exported.dir)
    windows, _ = windows_of([load_tokenizer(Path(exported.dir), 32, 8).encode(speech)])
    assert len(windows) > 5
    by_hand = np.mean(predictor.run_logits(windows), axis=0)
    with running(create_app(bundle_dir=exported.dir)) as url:
        [answer] = httpx.post(f"{url}/predict", json={"text": speech}, timeout=60).json()["predictions"]
    expected = softmax(by_hand / predictor.decision.temperature)  # calibrated, as every answer is
    assert predictor.decision.temperature != 1.0  # so the line above checks the temperature is applied
    assert answer["truncated"] is False
    assert answer["label"] == ["democrat", "republican"][int(expected.argmax())]
    assert [answer["scores"][k] for k in ("democrat", "republican")] == pytest.approx(expected.tolist(), abs=1e-5)
