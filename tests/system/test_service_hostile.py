"""Hostile input against the real service: uvicorn on loopback, a real exported NER bundle, ONNX Runtime.

Nothing a client sends may stall the service or get a 5xx: schemathesis fuzzes every endpoint from the
service's own OpenAPI document, with and without a token; the body cap, auth before parsing, invalid
Unicode and the NER splitter's worst case are checked one by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, export_ner_bundle, running

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token-7c1e9a2b4d"  # 16+ characters: the service refuses a weaker one
LIMITS = {"max_batch": 4, "max_chars": 200}  # small, so fuzzed requests cross them often
FUZZ_REQUESTS = 300  # per run; two runs (without and with a token): 600 requests
BODY_CAP = 2_000_000


@pytest.fixture(scope="module")
def ner_bundle(tmp_path_factory) -> Path:
    """The packaged MiniLM with a token-classification head, exported as a serving bundle (max_length 32)."""
    return export_ner_bundle(tmp_path_factory.mktemp("ner-bundle"))


def _check_answer(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if 400 <= response.status_code < 500:
        # schemathesis's response lists a header's values; httpx's joins them
        assert response.headers["content-type"] in ("application/json", ["application/json"]), response.text[:500]
        body = response.json()
        assert body["message"] and body["detail"], body
        for item in body["detail"]:
            assert item["loc"] and item["msg"], body
        loc = body["detail"][0]["loc"]
        where = str(loc[1]) if loc[0] == "body" and len(loc) > 1 else str(loc[-1])
        quoted = [
            w
            for w in ("'text'", "'texts'", "'text_pair'", "'text_pairs'", "'request_id'", "'label'", "'items'")
            if w in body["message"]
        ]
        assert where.lower() in body["message"].lower() or quoted, body  # the field (or header, or body) is named


def _fuzz(url: str, token: str | None) -> dict:
    """Send FUZZ_REQUESTS generated requests (schema-valid and schema-breaking) to every endpoint."""
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    # With a token the document itself is behind it (as /docs and /redoc are).
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=auth)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen = {"requests": 0, "5xx": 0, "by_status": {}, "by_operation": {}}

    @settings(
        max_examples=FUZZ_REQUESTS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, send_token=st.sampled_from([True, True, True, False]))
    def fuzz(case, send_token):
        headers = {"Authorization": f"Bearer {token}"} if token and send_token else None
        response = case.call(base_url=url, headers=headers, timeout=60)
        seen["requests"] += 1
        seen["5xx"] += response.status_code >= 500
        seen["by_status"][response.status_code] = seen["by_status"].get(response.status_code, 0) + 1
        seen["by_operation"][case.operation.label] = seen["by_operation"].get(case.operation.label, 0) + 1
        _check_answer(response)
        excluded = [schemathesis.checks.positive_data_acceptance]
        if response.status_code == 413:  # too large is a refusal too; schemathesis's list of them lacks 413
            excluded.append(schemathesis.checks.negative_data_rejection)
        case.validate_response(response, excluded_checks=excluded)

    fuzz()
    return seen


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_fuzzed_requests_get_no_5xx_and_json_errors_naming_the_field(ner_bundle, token):
    from deploy.service import create_app

    with running(create_app(bundle_dir=str(ner_bundle), api_token=token, **LIMITS)) as url:
        seen = _fuzz(url, token)
    print(f"fuzz ({'token' if token else 'no token'}): {seen}")
    assert seen["requests"] >= FUZZ_REQUESTS and seen["5xx"] == 0
    assert set(seen["by_operation"]) == {"GET /health", "GET /ready", "GET /model", "POST /predict", "POST /feedback"}
    assert seen["by_status"].get(200) and seen["by_status"].get(422)  # answered and refused, both reached
    if token:
        assert seen["by_status"].get(401)


@pytest.fixture(scope="module")
def guarded(ner_bundle):
    """The NER service with a token, the default batch and text limits, and a 2 MB body cap."""
    from deploy.service import create_app

    app = create_app(bundle_dir=str(ner_bundle), api_token=TOKEN, max_body_bytes=BODY_CAP)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running(app) as url, httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        yield client


def test_a_full_batch_of_the_splitters_worst_case_leaves_the_service_answering(guarded):
    texts = ["http://" + "." * 19_990 + "a"] * 64  # the quadratic splitter: ~5 s each, ~6 min for the batch
    answer = {}
    worker = threading.Thread(target=lambda: answer.update(r=guarded.post("/predict", json={"texts": texts})))
    started = time.perf_counter()
    worker.start()
    health = []
    while worker.is_alive() and time.perf_counter() - started < 120:
        t0 = time.perf_counter()
        assert guarded.get("/health").status_code == 200
        health.append(time.perf_counter() - t0)
        time.sleep(0.05)
    worker.join(timeout=1)
    elapsed = time.perf_counter() - started
    assert answer["r"].status_code == 200 and len(answer["r"].json()["predictions"]) == 64
    assert elapsed < 60, f"a batch of 64 hostile texts took {elapsed:.1f} s"  # 12 s measured on a busy machine
    assert max(health, default=0) < 5, f"/health took up to {max(health):.1f} s while the batch ran"


def test_a_body_above_the_cap_is_refused_before_it_is_read(guarded):
    big = json.dumps({"texts": ["word " * 3_000] * 200}).encode()  # 3 MB
    declared = guarded.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["detail"][0]["loc"] == ["body"]
    assert "FTFLOW_MAX_BODY_BYTES" in declared.json()["message"]
    # Without Content-Length (chunked): refused when the stream crosses the cap, not after reading it all.
    streamed = guarded.post("/predict", content=(big[i : i + 65_536] for i in range(0, len(big), 65_536)))
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert streamed.status_code == 413 and "goes past the limit" in streamed.json()["message"]


DOCS = ("/docs", "/redoc", "/openapi.json")


def test_with_a_token_the_docs_need_it_too(guarded):
    """On main /docs and /openapi.json answered anyone, token or not; now only the probes stay open."""
    base = str(guarded.base_url).rstrip("/")
    for path in DOCS:
        for headers in ({}, {"Authorization": "Bearer not-the-token-at-all"}):
            refused = httpx.get(base + path, headers=headers)
            assert refused.status_code == 401, (path, refused.status_code)
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json()["detail"][0]["loc"] == ["header", "authorization"]
        assert guarded.get(path).status_code == 200, path  # the client sends the token
    assert "/openapi.json" in guarded.get("/docs").text and "/openapi.json" in guarded.get("/redoc").text
    document = guarded.get("/openapi.json").json()
    assert {"/predict", "/feedback", "/model", "/health", "/ready"} <= set(document["paths"])
    assert not set(DOCS) & set(document["paths"]) and "bearer" in str(document["components"]["securitySchemes"]).lower()
    assert httpx.get(f"{base}/docs/oauth2-redirect").status_code == 404  # FastAPI's extra page is gone too
    for probe in ("/health", "/ready"):
        assert httpx.get(base + probe).status_code == 200, probe


def test_without_a_token_the_docs_stay_open(ner_bundle, monkeypatch):
    from deploy.service import create_app

    monkeypatch.delenv("FTFLOW_API_TOKEN", raising=False)
    with running(create_app(bundle_dir=str(ner_bundle))) as url:
        for path in DOCS:
            assert httpx.get(url + path).status_code == 200, path
        assert "securitySchemes" not in httpx.get(f"{url}/openapi.json").json()["components"]


@pytest.mark.parametrize(
    "token, says",
    [
        ("hunter2", "FTFLOW_API_TOKEN is 7 characters"),
        ("z" * 24, "FTFLOW_API_TOKEN is one character repeated 24 times"),
    ],
    ids=["short", "repeated"],
)
def test_a_weak_token_is_refused_at_start(ner_bundle, token, says):
    """On main a one-character FTFLOW_API_TOKEN started the service: one guess away from open."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FTFLOW_API_TOKEN": token}
    out = subprocess.run(
        [sys.executable, "-m", "deploy.service", "--bundle", str(ner_bundle), "--port", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"environment variable {says}" in out.stderr, out.stderr[-2000:]
    assert "at least 16 random characters" in out.stderr and "secrets.token_urlsafe(24)" in out.stderr
    assert token not in out.stderr  # the refusal does not print the secret


def test_the_token_is_checked_before_the_body_is_parsed(guarded):
    url = f"{guarded.base_url}/predict"
    assert httpx.post(url, content=b"{not json").status_code == 401  # not 422: nobody parsed it
    wrong = httpx.post(url, content=b"{not json", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"][0]["loc"] == ["header", "authorization"]
    assert guarded.post("/predict", content=b"{not json").status_code == 422  # with the token: parsed, refused


@pytest.mark.parametrize(
    "raw, loc, says",
    [
        (b'{"texts": ["fine", "a \\ud800 lone surrogate"]}', ["body", "texts", 1], "lone surrogate"),
        (b'{"text": "ab\xffc"}', ["body"], "not a JSON object this service can read"),
        (b"[" * 100_000, ["body"], "nested too deep"),
        (b'{"text": ' + b"9" * 5_000 + b"}", ["body"], "not a JSON object this service can read"),
    ],
)
def test_invalid_unicode_and_json_get_422_naming_the_place(guarded, raw, loc, says):
    r = guarded.post("/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    assert r.json()["detail"][0]["loc"] == loc and says in r.json()["message"]


# Labels as a client writes them in the JSON body: none of them can be a class name or a value.
UNLABELS = [
    '"inf"', '"-inf"', '"nan"', '"1e400"', "1e400", "-1e400", "Infinity", "NaN", "9" * 400, "true",
    json.dumps("x" * 100_000), json.dumps("\ufb03" * 5_000), '"\\u200b"',
]  # fmt: skip


def test_labels_that_cannot_be_labels_get_422_naming_the_field_and_never_their_echo(ner_bundle, tmp_path, monkeypatch):
    """On main "inf", "1e400" or a 400-digit number got a plain-text 500 and a long label was echoed twice."""
    from deploy.service import create_app
    from tasks.monitoring.prediction_log import ParquetSink, prediction_record

    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path))
    classes = {"label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}}
    ParquetSink(tmp_path / "predictions").write(
        [
            prediction_record({"value": 0.5}, "a value", "m", "1", 1.0, request_id="regression-1"),
            prediction_record(classes, "a class", "m", "1", 1.0, request_id="classes-1"),
        ]
    )
    answers = []
    with running(create_app(bundle_dir=str(ner_bundle))) as url, httpx.Client(base_url=url, timeout=60) as client:
        for rid in ("regression-1", "classes-1"):
            for label in UNLABELS:
                body = f'{{"request_id": "{rid}", "label": {label}}}'.encode()
                answers.append((rid, label, client.post("/feedback", content=body)))
        # A real value still goes in.
        assert client.post("/feedback", json={"request_id": "regression-1", "label": "0.25"}).json() == {"stored": 1}
    for rid, label, r in answers:
        assert r.status_code == 422, (rid, label[:40], r.status_code, r.text[:300])
        assert r.json()["detail"][0]["loc"][:2] == ["body", "label"], r.text[:300]  # true: ["body", "label", "str"]
        assert len(r.text) < 600, (rid, label[:40], r.text[:300])  # a short, marked prefix at most
    long = [r for _, label, r in answers if "x" * 100 in label]
    assert long and all("characters, cut" in r.json()["message"] for r in long)


def test_listening_beyond_loopback_needs_a_token_or_insecure(ner_bundle, caplog):
    from deploy.service import check_exposure

    check_exposure("127.0.0.1", None, insecure=False)
    check_exposure("::1", None, insecure=False)
    check_exposure("0.0.0.0", TOKEN, insecure=False)
    with pytest.raises(ValueError, match="refusing to listen on 0.0.0.0 without FTFLOW_API_TOKEN"):
        check_exposure("0.0.0.0", None, insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)
    assert "WITHOUT a token (--insecure)" in caplog.text
    env = {k: v for k, v in os.environ.items() if k != "FTFLOW_API_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "deploy.service", "--bundle", str(ner_bundle), "--host", "0.0.0.0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "pass --insecure" in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("escape", ["../elsewhere/model.onnx", "ABSOLUTE"])
def test_a_serving_file_outside_its_bundle_is_refused_at_start(ner_bundle, tmp_path, escape):
    """On main the bundle's `serving_file` was joined unchecked: `../` (or an absolute path) served any ONNX file."""
    import shutil
    import socket

    bundle = shutil.copytree(ner_bundle, tmp_path / "bundle")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(ner_bundle / "model.onnx", elsewhere / "model.onnx")
    meta = json.loads((bundle / "finetune_flow.json").read_text())
    meta["serving_file"] = str(elsewhere / "model.onnx") if escape == "ABSOLUTE" else escape
    (bundle / "finetune_flow.json").write_text(json.dumps(meta))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "deploy.service", "--bundle", str(bundle), "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the service started and served the file outside its bundle: {str(e.stderr)[-1000:]}")
    assert out.returncode != 0
    assert "points outside the bundle" in out.stderr and "serving_file" in out.stderr, out.stderr[-3000:]


# --- /feedback's label, fuzzed: every spelling a client can send, for each kind of logged answer ----------

FEEDBACK_FUZZ_REQUESTS = 300  # per run; two runs (without and with a token)
LOGGED = {  # a request id per kind of answer a correction can be for
    "value-1": {"value": 0.5},
    "class-1": {"label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}},
    "labels-1": {"labels": ["sports"], "scores": {"news": 0.2, "sports": 0.7, "tech": 0.4}},
    "entities-1": {"entities": [{"entity": "LOC", "word": "Paris", "start": 0, "end": 5, "score": 0.9}]},
}
# Numbers at the edges, as a client writes them in JSON: some no float can hold, some Python's json reads anyway.
EDGE_NUMBERS = [
    "Infinity", "-Infinity", "NaN", "1e400", "-1e400", "1e-400", "-0.0", "0", "-0", "1.7976931348623157e308",
    str(2**63), str(-(2**64)), "9" * 400, "-" + "9" * 4300, "0." + "0" * 500 + "1", "true", "false", "null",
]  # fmt: skip
NUMBER_WORDS = ["inf", "-inf", "nan", "NaN", "1e400", " 1 ", "-0.0", "0x10", "1_000", "٣", "１", "[]", '["pos"]', "["]


def _json_strings():
    """JSON string literals: any Unicode (lone surrogates escaped as \\udXXX), number words, huge texts."""
    return st.one_of(
        st.text(st.characters(codec=None), max_size=30).map(json.dumps),
        st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3).map(json.dumps),
        st.sampled_from(NUMBER_WORDS).map(json.dumps),
        st.sampled_from(["pos", "neg", "news", "sports", "tech", " pos ", "POS"]).map(json.dumps),
        st.tuples(st.sampled_from(["x", "\ufb03", "\u200b", "\U0001f600", "\\"]), st.integers(1_000, 300_000)).map(
            lambda t: json.dumps(t[0] * t[1])
        ),
    )


def _json_labels():
    """A label as raw JSON text: a number at an edge, a string, a list (of names, of anything, nested), an object."""
    leaf = st.one_of(st.sampled_from(EDGE_NUMBERS), _json_strings(), st.integers().map(str), st.floats().map(repr))
    lists = st.recursive(
        leaf, lambda inner: st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"), max_leaves=8
    )
    return st.one_of(
        leaf,
        lists,
        st.just("[]"),
        st.lists(st.sampled_from(['"news"', '"sports"', '"tech"', '"unknown"']), max_size=5).map(
            lambda names: "[" + ", ".join(names) + "]"
        ),
        st.integers(1_001, 3_000).map(lambda n: "[" + ", ".join(['"news"'] * n) + "]"),  # past the list cap
        st.sampled_from(["{}", '{"label": "pos"}', '[{"a": 1}]', "[null, true, 1.5]"]),
    )


@st.composite
def _feedback_bodies(draw) -> bytes:
    """One correction or a batch of them, for logged ids of every kind, unknown ids and ids no rule allows."""
    ids = st.one_of(st.sampled_from(list(LOGGED)).map(json.dumps), st.sampled_from(['"unknown-9"', '"../x"', "7"]))
    if draw(st.booleans()):
        return f'{{"request_id": {draw(ids)}, "label": {draw(_json_labels())}}}'.encode()
    items = draw(st.lists(st.tuples(ids, _json_labels()), min_size=0, max_size=4))
    return ('{"items": [' + ", ".join(f'{{"request_id": {i}, "label": {y}}}' for i, y in items) + "]}").encode()


def _fuzz_feedback(url: str, token: str | None) -> dict:
    seen: dict = {"requests": 0, "5xx": 0, "by_status": {}}

    @settings(
        max_examples=FEEDBACK_FUZZ_REQUESTS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=_feedback_bodies(), send_token=st.sampled_from([True, True, True, False]))
    def fuzz(body, send_token):
        headers = {"Content-Type": "application/json"}
        if token and send_token:
            headers["Authorization"] = f"Bearer {token}"
        response = httpx.post(f"{url}/feedback", content=body, headers=headers, timeout=60)
        seen["requests"] += 1
        seen["5xx"] += response.status_code >= 500
        seen["by_status"][response.status_code] = seen["by_status"].get(response.status_code, 0) + 1
        assert response.status_code < 500, (response.status_code, body[:300], response.text[:500])
        if response.status_code == 200:
            assert response.json()["stored"] >= 1
            return
        _check_answer(response)
        if response.status_code == 422:  # a huge label is cut, never echoed: the answer stays small
            assert len(response.content) < 8_000, (body[:300], len(response.content))

    fuzz()
    return seen


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_fuzzed_feedback_labels_get_no_5xx(ner_bundle, tmp_path, monkeypatch, token):
    """Labels at every edge (inf, nan, 1e400, huge integers, -0.0, huge and unpaired-surrogate strings, nested,
    empty and non-string lists) for a value, a class, a label set and entities: refused with a 422 or stored."""
    from deploy.service import create_app
    from tasks.monitoring.prediction_log import ParquetSink, prediction_record

    monkeypatch.setenv("FTFLOW_PREDICTION_LOG", str(tmp_path))
    ParquetSink(tmp_path / "predictions").write(
        [prediction_record(answer, f"text {rid}", "m", "1", 1.0, request_id=rid) for rid, answer in LOGGED.items()]
    )
    app = create_app(bundle_dir=str(ner_bundle), api_token=token, max_body_bytes=BODY_CAP)
    with running(app) as url:
        seen = _fuzz_feedback(url, token)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    print(f"feedback fuzz ({'token' if token else 'no token'}): {seen}")
    assert seen["requests"] >= FEEDBACK_FUZZ_REQUESTS and seen["5xx"] == 0
    assert seen["by_status"].get(200) and seen["by_status"].get(422)  # stored and refused, both reached
    if token:
        assert seen["by_status"].get(401)
