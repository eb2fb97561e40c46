"""The HTTP service for real: uvicorn on loopback, httpx clients, the registry of conftest, ONNX Runtime.

Registered model `test-serve` gets the model of `flow_result` as its champion; the hot-reload test
promotes another version of `test-serve-reload` on a service of its own while a client keeps sending
requests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, running

NAME = "test-serve"
pytestmark = pytest.mark.slow


def _register_copy(source_mv, alias: str, name: str = NAME) -> str:
    from tasks.platform import tracking
    from tasks.registry import register

    mv = tracking.client().create_model_version(
        name, source=source_mv.source, run_id=source_mv.run_id, tags=dict(source_mv.tags)
    )
    register.set_alias(name, alias, mv.version)
    return str(mv.version)


@pytest.fixture(scope="module")
def good_version(flow_result):
    from tasks.registry import register

    reg = flow_result["result"]["registered"]
    return register.get_version(reg["name"], reg["version"])


@pytest.fixture(scope="module")
def champion(good_version):
    from tasks.platform import tracking

    tracking.client().create_registered_model(NAME)
    return _register_copy(good_version, "champion")


@pytest.fixture(scope="module")
def service(champion):
    from deploy.service import create_app

    with (
        running(create_app(NAME, poll_seconds=0.3, max_batch=4)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def bundle_dir(flow_result) -> Path:
    return Path(flow_result["result"]["run_dir"]) / "onnx"


def test_health_ready_and_model(service, champion):
    assert service.get("/health").json() == {"status": "ok"}
    ready = service.get("/ready")
    assert ready.status_code == 200 and ready.json()["version"] == champion
    info = service.get("/model").json()
    assert (info["name"], info["version"], info["task"]) == (NAME, champion, "classification")
    assert info["labels"] == ["negative", "positive"] and 0.0 <= info["metrics"]["f1"] <= 1.0
    assert service.get("/docs").status_code == 200


def test_predict_one_text_and_a_batch(service, champion):
    one = service.post("/predict", json={"text": "a wonderful, moving film"})
    assert one.status_code == 200 and one.headers["x-model-version"] == champion
    [p] = one.json()["predictions"]
    assert p["label"] in ("negative", "positive") and p["truncated"] is False
    assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    long_text = "an endless, meandering and repetitive story " * 40
    batch = service.post("/predict", json={"texts": ["dull", long_text, "a delight"]}).json()["predictions"]
    assert [b["truncated"] for b in batch] == [False, True, False]  # cut at max_length, and said so


@pytest.mark.parametrize(
    "body, says",
    [
        ({"texts": []}, "texts: List should have at least 1 item"),
        ({"text": ""}, "text: String should have at least 1 character"),
        ({"texts": ["fine", "   "]}, "texts[1]: is only whitespace"),
        ({"text": "\u200b\u200b"}, "text: has nothing to read once normalised"),  # zero-width spaces
        ({"texts": ["fine", "\ufeff\x00"]}, "texts[1]: has nothing to read once normalised"),  # a BOM and NUL
        ({"texts": ["fine", 3]}, "texts[1]: Input should be a valid string"),
        ({"text": 42}, "text: Input should be a valid string"),
        ({"texts": ["a", "b", "c", "d", "e"]}, "texts: List should have at most 4 items"),
        ({}, "send either 'text'"),
        ({"text": "fine", "text_pair": "also fine"}, "text_pair: this classification model takes single texts"),
        ({"text": "fine", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_bad_input_gets_422_with_a_clear_message(service, body, says):
    r = service.post("/predict", json=body)
    assert r.status_code == 422
    assert says in r.json()["message"], r.json()


def test_a_version_that_fails_to_load_is_retried_with_backoff(good_version, monkeypatch):
    from deploy.model_holder import ModelHolder
    from deploy.settings import Settings
    from tasks.platform import tracking
    from tasks.registry import register

    mv = tracking.client().create_model_version(NAME, source=good_version.source + "-gone", run_id=good_version.run_id)
    register.set_alias(NAME, "broken", mv.version)
    downloads = []
    real = register.download_bundle
    monkeypatch.setattr(register, "download_bundle", lambda *a: downloads.append(a) or real(*a))
    holder = ModelHolder(Settings.from_env(model_name=NAME, alias="broken", poll_seconds=30))
    try:
        assert holder.refresh() is False and "next try in 60 s" in holder.last_error
        assert holder.refresh() is False and len(downloads) == 1  # not downloaded again at the next poll
    finally:
        holder.stop()


def test_registry_errors_are_not_reported_as_a_missing_champion(monkeypatch):
    from tasks.registry import register

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(Exception, match="127.0.0.1:9"):
        register.version_by_alias(NAME, "champion")


def test_without_a_champion_the_service_is_alive_but_not_ready():
    from deploy.service import create_app

    with running(create_app("no-champion-here", poll_seconds=0)) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and "ftflow promote no-champion-here" in ready.json()["reason"]
        r = httpx.post(f"{url}/predict", json={"text": "fine"})
        assert r.status_code == 503 and "no model loaded" in r.json()["message"]


@pytest.fixture
def pair_bundle(tmp_path, bundle_dir) -> Path:
    """The same real ONNX graph declared as a pair model: BERT takes pairs (token_type_ids) natively."""
    pair_bundle = tmp_path / "pair"
    shutil.copytree(bundle_dir, pair_bundle)
    meta = json.loads((pair_bundle / "finetune_flow.json").read_text())
    (pair_bundle / "finetune_flow.json").write_text(json.dumps({**meta, "task": "pair_classification"}))
    return pair_bundle


def test_pair_model_refuses_a_missing_pair(pair_bundle):
    from deploy.service import create_app

    with running(create_app(bundle_dir=str(pair_bundle), max_chars=50)) as url:
        long_pair = httpx.post(f"{url}/predict", json={"texts": ["a"], "text_pairs": ["word " * 20]})
        assert long_pair.status_code == 422
        assert "text_pairs[0]: String should have at most 50 characters" in long_pair.json()["message"]
        missing = httpx.post(f"{url}/predict", json={"texts": ["a cat sat", "a dog ran"]})
        assert missing.status_code == 422 and "classifies text pairs" in missing.json()["message"]
        ok = httpx.post(f"{url}/predict", json={"texts": ["a cat sat"], "text_pairs": ["a cat was sitting"]})
        assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
        uneven = httpx.post(f"{url}/predict", json={"texts": ["a", "b"], "text_pairs": ["c"]})
        assert uneven.status_code == 422 and "one second text per text" in uneven.json()["message"]


def test_pair_model_through_mlflow_pyfunc_reads_the_second_text(tmp_path, pair_bundle):
    import mlflow.pyfunc
    import pandas as pd

    from tasks.inference.predictor import OnnxPredictor
    from tasks.registry.register import save_serving_model

    texts, pairs = ["a cat sat on the mat", "the film was long"], ["a cat was sitting", "a short and dull film"]
    save_serving_model(pair_bundle, tmp_path / "pyfunc", texts, "pair_classification", pairs)
    model = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    assert model.metadata.get_input_schema().input_names() == ["text", "text_pair"]
    out = model.predict(pd.DataFrame({"text": texts, "text_pair": pairs}))
    direct = OnnxPredictor(pair_bundle).predict(texts, pairs)
    assert out["score"].tolist() == pytest.approx([d["score"] for d in direct], abs=1e-6)
    alone = OnnxPredictor(pair_bundle).predict(texts[:1], ["something else entirely"])
    assert alone[0]["score"] != pytest.approx(direct[0]["score"], abs=1e-6)  # the second text counts
    with pytest.raises(Exception, match="text_pair"):
        model.predict(pd.DataFrame({"text": texts}))


def test_bearer_token_from_the_environment(monkeypatch, bundle_dir):
    from deploy.service import create_app

    monkeypatch.setenv("FTFLOW_API_TOKEN", "s3cret-token-4f9b2e71")
    with running(create_app(bundle_dir=str(bundle_dir))) as url:
        body = {"text": "fine"}
        assert httpx.post(f"{url}/predict", json=body).status_code == 401
        wrong = httpx.post(f"{url}/predict", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        right = httpx.post(f"{url}/predict", json=body, headers={"Authorization": "Bearer s3cret-token-4f9b2e71"})
        assert right.status_code == 200
        assert httpx.get(f"{url}/model").status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no token


@pytest.fixture
def reloading(good_version):
    """A service of its own on its own model, so that moving its champion leaves the module's service as it was."""
    from deploy.service import create_app
    from tasks.platform import tracking

    name = f"{NAME}-reload"
    tracking.client().create_registered_model(name)
    champion = _register_copy(good_version, "champion", name)
    with (
        running(create_app(name, poll_seconds=0.3, max_batch=4)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield name, champion, client


def test_hot_reload_while_serving_fails_no_request(reloading, good_version):
    from tasks.monitoring.shadow import check_shadow
    from tasks.registry.promote import promote_challenger

    name, champion, service = reloading
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=str(service.base_url), timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/predict", json={"texts": ["a fine film", "a dull one"]})
                    results.append((r.status_code, r.headers.get("x-model-version")))
                except httpx.HTTPError as e:
                    results.append((0, repr(e)))

    client = threading.Thread(target=hammer)
    client.start()
    try:
        time.sleep(0.5)
        new = _register_copy(good_version, "challenger", name)
        # the same model scores a tie: promoted
        decision = promote_challenger(name, margin=0.0, shadow_gate=check_shadow)
        assert decision.decision == "promoted", decision.reason
        deadline = time.monotonic() + 30
        while service.get("/ready").json()["version"] != new and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # some requests on the new version
    finally:
        stop.set()
        client.join(timeout=30)
    failed = [r for r in results if r[0] != 200]
    versions = [v for _, v in results]
    assert len(results) >= 10 and not failed, (len(results), failed[:5])
    assert champion in versions and new in versions
    assert versions.index(new) > max(i for i, v in enumerate(versions) if v == champion)  # swapped once, for good
    assert service.get("/model").json()["version"] == new


def test_service_never_imports_torch(champion):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from deploy.service import create_app\n"
        f"with TestClient(create_app({NAME!r}, poll_seconds=0)) as c:\n"
        "    r = c.post('/predict', json={'text': 'a fine film'})\n"
        "    assert r.status_code == 200, r.text\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_ner_entities_carry_character_spans(tmp_path):
    """A token-classification graph through the predictor; its head is set to tag every word B-LOC."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling.encode import resolve_model_path
    from tasks.modelling.export import export_onnx

    base = resolve_model_path("minilm")
    model = AutoModelForTokenClassification.from_pretrained(base, num_labels=3)
    with torch.no_grad():  # a known answer: every word opens an entity, so every span can be checked
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    tok = AutoTokenizer.from_pretrained(base)
    export_onnx(model, tok, tmp_path / "model.onnx", 17)
    tok.save_pretrained(str(tmp_path))
    (tmp_path / "finetune_flow.json").write_text(
        json.dumps({"task": "ner", "labels": ["O", "B-LOC", "I-LOC"], "max_length": 24, "serving_file": "model.onnx"})
    )
    text = "@justinbieber flies from   New York to Reykjavík, daily " + "and more words " * 10
    [answer] = OnnxPredictor(tmp_path).predict([text])
    assert answer["truncated"] is True  # 24 tokens hold only the first words
    entities = answer["entities"]
    # Words as the training data cuts them: the handle is one word (BERT's pre-tokenizer makes it "@", "justin…").
    assert [e["text"] for e in entities[:8]] == [
        "@justinbieber",
        "flies",
        "from",
        "New",
        "York",
        "to",
        "Reykjavík",
        ",",
    ]
    for e in entities:
        assert e["type"] == "LOC" and e["text"] == text[e["start"] : e["end"]] and 0 < e["score"] <= 1


def test_serving_words_match_the_tokens_of_the_ner_training_data():
    from tasks.config import SourceConfig
    from tasks.data.sources import read_source
    from tasks.inference.tokenizer import split_words

    sentences = [list(tokens) for tokens in read_source(SourceConfig(kind="package", name="tweet_ner"))["tokens"]]
    kept = sum(
        t in {text[a:b] for a, b in split_words(text)}
        for tokens in sentences
        for text in [" ".join(tokens)]
        for t in tokens
    )
    assert kept / sum(map(len, sentences)) > 0.97  # 0.985 measured: the rest are odd tokens like "Park(ing"
    text = "@NYC_fan: back in the U.S. today, see http://t.co/x1. Don't wait :)"
    assert [text[a:b] for a, b in split_words(text)] == [
        "@NYC_fan",
        ":",
        "back",
        "in",
        "the",
        "U.S.",
        "today",
        ",",
        "see",
        "http://t.co/x1",
        ".",
        "Don't",
        "wait",
        ":)",
    ]
