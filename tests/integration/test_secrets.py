"""Secrets by reference, masked literals, safe names and filters; a real flow run searched for canaries."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import socket
import sqlite3
import threading
import warnings
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, small_config

TOKEN = "CANARYtok3n9d1e"
PASSWORD = "CANARYpassw0rd7c2"
REF_TOKEN = "CANARYrefval5b8a"
# The sinks issue 20 added: the feedback source's log_location, `ftflow score --input`, the tracking URI.
LOG_PASSWORD = "CANARYlogpw4e7"
LOG_REF = "CANARYlogref2b9"
SCORE_PASSWORD = "CANARYscorepw8d3"
# Passwords SQLAlchemy (and, with '@', urllib) reads back unencoded; each piece before an odd character is a needle.
ODD_LOG_PASSWORD = "CANARYlog/lo#g? 7e1"
ODD_INPUT_PASSWORD = "CANARYin/p#u? t3a"
ODD_TRACKING_PASSWORD = "CANARYtr@ck 5d"


# --- redaction and references --------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://reader:hunter2@db/x", "postgresql://reader:***@db/x"),
        ("postgresql://reader:${DB_PASSWORD}@db/x", "postgresql://reader:${DB_PASSWORD}@db/x"),
        ("postgresql://reader@db/x", "postgresql://reader@db/x"),
        (
            "https://h/f.csv?token=abc&page=2&X-Amz-Signature=ff&api_key=k",
            "https://h/f.csv?token=***&page=2&X-Amz-Signature=***&api_key=***",
        ),
        ("https://h/f.csv?sig=${SIG}&se=2027", "https://h/f.csv?sig=${SIG}&se=2027"),
    ],
)
def test_redact_url_masks_literals_and_keeps_references(url, shown):
    from tasks.secrets import redact_url

    assert redact_url(url) == shown


def test_redact_text_masks_urls_inside_messages_and_known_values():
    from tasks.secrets import redact_text

    msg = "cannot open 'mysql://u:pw123@h:3306/d' nor https://x/y?password=zz (secret s3cretvalue)"
    assert (
        redact_text(msg, ("s3cretvalue",))
        == "cannot open 'mysql://u:***@h:3306/d' nor https://x/y?password=*** (secret ***)"
    )


@pytest.mark.parametrize("password", ["pa/ss", "ab#c", "a?b", "pa ss", "p@ss", "a@b:1", "s3cr:et"])
def test_passwords_sqlalchemy_or_urllib_read_unencoded_are_masked(password):
    """On main the masker stopped at '/', '#', '?' or a space: 'pa/ss' was shown whole."""
    from tasks.secrets import literal_credentials, redact_text, redact_url

    url = f"postgresql://reader:{password}@db.example:5432/x?sslmode=require"
    assert redact_url(url) == "postgresql://reader:***@db.example:5432/x?sslmode=require"
    said = redact_text(f"(psycopg.OperationalError) cannot connect to {url}: refused")
    assert (
        said
        == "(psycopg.OperationalError) cannot connect to postgresql://reader:***@db.example:5432/x?sslmode=require: refused"
    )
    assert literal_credentials(url) == ["the password of the user part"]


PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40)


@settings(max_examples=500, deadline=None, database=None)
@given(password=PRINTABLE)
def test_every_printable_password_a_parser_reads_back_is_masked(password):
    """Property: a password SQLAlchemy or urllib reads back from the URL unencoded never survives the masker."""
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    from tasks.secrets import REFERENCE, redact_text, redact_url

    url = f"postgresql://reader:{password}@db.example:5432/x"

    def reads(parse) -> bool:
        try:
            return parse(url) == password
        except ValueError:
            return False

    assume("://" not in password and not REFERENCE.fullmatch(password))  # a URL inside, or a ${REF} kept on purpose
    assume(reads(lambda u: make_url(u).password) or reads(lambda u: urlsplit(u).password))
    masked = "postgresql://reader:***@db.example:5432/x"
    assert redact_url(url) == masked
    assert (
        redact_text(f"could not open '{url}' (timeout)\nretrying {url}")
        == f"could not open '{masked}' (timeout)\nretrying {masked}"
    )


@settings(max_examples=300, deadline=None, database=None)
@given(password=PRINTABLE)
def test_literal_credentials_become_references_that_expand_back_exactly(password):
    """What `ftflow score` hands Prefect for its --input: references only; expanded, the URL the user gave."""
    from unittest import mock
    from urllib.parse import urlsplit

    from sqlalchemy.engine import make_url

    from tasks.secrets import MASK, REFERENCE, expand_references, literals_as_references, url_password

    url = f"postgresql://reader:{password}@db.example:5432/x?sslmode=require&api_key=k3y"

    def reads(parse) -> bool:
        try:
            return parse(url) == password
        except ValueError:
            return False

    assume("://" not in password and not REFERENCE.search(password) and password != MASK)  # *** is shown masked
    assume(reads(lambda u: make_url(u).password) or reads(lambda u: urlsplit(u).password))
    given_to_flow, exported = literals_as_references(url, "FTFLOW_T_INPUT")
    assert exported == {"FTFLOW_T_INPUT_PASSWORD": password, "FTFLOW_T_INPUT_API_KEY": "k3y"}
    assert given_to_flow == (
        "postgresql://reader:${FTFLOW_T_INPUT_PASSWORD}@db.example:5432/x?sslmode=require&api_key=${FTFLOW_T_INPUT_API_KEY}"
    )
    assert url_password(given_to_flow) == "${FTFLOW_T_INPUT_PASSWORD}"
    with mock.patch.dict(os.environ, exported):
        assert expand_references(given_to_flow, "--input") == (url, (password, "k3y"))


@pytest.mark.parametrize("password", ["CANARYpassw0rd7c2", "CANARY/pa?ss 7c2"])
def test_ready_and_the_service_log_never_show_the_tracking_password(password, tmp_path):
    """On main /ready (no token needed) answered MLflow's error, tracking URI and password included."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port, closed = s.getsockname()[1], s.getsockname()[1] + 1  # nothing listens beside a fresh port
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": f"http://ops:{password}@127.0.0.1:{closed}",
        "MLFLOW_TRACKING_PASSWORD": password,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }
    log = (tmp_path / "service.log").open("w+")
    service = subprocess.Popen(
        [sys.executable, "-m", "deploy.service", "some-model", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and service.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                if "failed" in ready.text:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    finally:
        service.terminate()
        service.wait(timeout=60)
    said = (tmp_path / "service.log").read_text()
    assert ready is not None and ready.status_code == 503 and "failed" in ready.text, said[-2000:]
    # Not even a piece: each canary starts with CANARY, wherever a parser cut the URL.
    assert "CANARY" not in ready.text and "ops:***@" in ready.text, ready.text
    assert "failed" in said and "CANARY" not in said, said[-3000:]


def test_reference_expands_only_in_memory_and_names_a_missing_variable(monkeypatch):
    from tasks.secrets import SecretReferenceError, expand_references

    monkeypatch.setenv("FTFLOW_T_PW", "pw-value")
    assert expand_references("pg://u:${FTFLOW_T_PW}@h/d", "f") == ("pg://u:pw-value@h/d", ("pw-value",))
    monkeypatch.delenv("FTFLOW_T_PW")
    with pytest.raises(SecretReferenceError, match=r"data.source.connection refers to \$\{FTFLOW_T_PW\}.*not set"):
        expand_references("pg://u:${FTFLOW_T_PW}@h/d", "data.source.connection")


def test_literal_credential_warns_once_and_every_dump_is_masked():
    import yaml

    from tasks.config import PipelineConfig, flatten_config, load_config

    sha = "a" * 64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(
            None, ["data.source.kind=url", f"data.source.url=http://h/d.csv?token={TOKEN}", f"data.source.sha256={sha}"]
        )
    shown = [str(w.message) for w in caught if "literal credential" in str(w.message)]
    assert len(shown) == 1 and "${" in shown[0] and TOKEN not in shown[0]
    assert cfg.data.source.url.endswith(TOKEN)  # in memory the source still opens
    assert TOKEN not in cfg.to_yaml() and TOKEN not in str(flatten_config(cfg))
    assert "token=***" in cfg.to_yaml()
    with warnings.catch_warnings(record=True) as caught:  # read back from the run folder: masked, no new warning
        warnings.simplefilter("always")
        again = PipelineConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again.data.source.url.endswith("token=***") and not caught


def test_config_errors_do_not_repeat_a_mistyped_secret():
    from tasks.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, [f"data.source.pasword={PASSWORD}"])
    assert "data.source.pasword: unknown field" in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            ["data.source.kind=sql", "data.source.query=1", f"data.source.connection=[postgresql://u:{PASSWORD}@h/d]"],
        )
    assert PASSWORD not in str(err.value) and "u:***@h" in str(err.value)


def test_sql_error_message_masks_the_password(tmp_path):
    from tasks.config import SourceConfig
    from tasks.data.readers import DataSourceError
    from tasks.data.sources import read_source

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = SourceConfig(kind="sql", query="SELECT 1", connection=f"sqlite://reader:{PASSWORD}@/{tmp_path}/x.db")
    with pytest.raises(DataSourceError) as err:
        read_source(src)
    assert PASSWORD not in str(err.value) and "reader:***@" in str(err.value)


def test_run_summary_shows_the_tracking_uri_without_its_password(monkeypatch):
    from flows.training import summary_markdown
    from tasks.platform import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://ops:{PASSWORD}@mlflow.example.com")
    shown = tracking.shown_tracking_uri()
    assert shown == "https://ops:***@mlflow.example.com" and tracking.tracking_uri().endswith("example.com")
    md = summary_markdown({"run_name": "r", "run_id": "1", "experiment": "e", "tracking_uri": shown, "metrics": {}})
    assert PASSWORD not in md and "ops:***@" in md


# --- names, pins and filters --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["name", "registry.model_name"])
@pytest.mark.parametrize("bad", ["../../x", "a/b", "..", ".hidden", "x y", "n'; drop"])
def test_names_that_could_leave_run_dir_are_refused(field, bad):
    from tasks.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="letters, digits"):
        load_config(None, [f"{field}={bad}"])


def test_sha256_must_be_64_hex_digits():
    from tasks.config import ConfigError, load_config

    base = ["data.source.kind=url", "data.source.url=http://h/d.csv"]
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_config(None, [*base, "data.source.sha256=abc"])
    assert load_config(None, [*base, f"data.source.sha256={'AB' * 32}"]).data.source.sha256 == "ab" * 32


def test_cached_download_is_rehashed_before_use(tmp_path, monkeypatch, csv_server):
    from tasks.config import SourceConfig
    from tasks.data.sources import cache_dir, read_source

    url, sha, _ = csv_server
    src = SourceConfig(kind="url", url=url, sha256=sha)
    first = read_source(src)
    cached = next((cache_dir() / "downloads" / sha).iterdir())
    cached.write_text("text,label\ntampered,positive\n")
    assert read_source(src).equals(first)  # the tampered copy was not used: downloaded again
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha


def test_mlflow_filter_values_cannot_change_the_filter():
    from tasks.platform import tracking

    assert tracking.filter_value("m-1") == "'m-1'"
    assert tracking.filter_value("it's") == '"it\'s"'
    with pytest.raises(ValueError, match="cannot be used in an MLflow search"):
        tracking.filter_value("a' or name != '\"")


# --- a real flow run, then every byte searched -----------------------------------------------------


@pytest.fixture(scope="module")
def csv_server(tmp_path_factory):
    """A loopback HTTP server serving a small labelled CSV; (url with a canary token, sha256, folder)."""
    from tasks.data.sources import _read_rotten_tomatoes

    folder = tmp_path_factory.mktemp("served")
    _read_rotten_tomatoes().head(360).to_csv(folder / "reviews.csv", index=False)
    sha = hashlib.sha256((folder / "reviews.csv").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/reviews.csv?token={TOKEN}", sha, folder
    server.shutdown()
    server.server_close()


def _files_holding(roots: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                hits += [f"{path}: {n.decode()}" for n in needles if n in data]
    return hits


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: a connection there is refused


def _feedback_sources(tmp_path: Path, folder: Path, monkeypatch) -> list[str]:
    """Validate a feedback source whose log_location holds a literal password and a ${ENV} one, then one whose
    PostgreSQL URL holds a password with / # ? and a space and cannot connect; the error texts it gave."""
    from flows.training import validate_only
    from tasks.monitoring.feedback import record_feedback
    from tasks.monitoring.prediction_log import open_sink, prediction_record

    monkeypatch.setenv("FTFLOW_TEST_LOG_REF", LOG_REF)
    log_db = f"sqlite:///file:{folder / 'log.db'}?uri=true"
    reviews = pd.read_csv(folder / "reviews.csv").sample(120, random_state=0)
    answer = {"label": "positive", "score": 0.6, "scores": {"negative": 0.4, "positive": 0.6}}
    logged = [prediction_record(answer, text, "test-secrets", "1", 1.0, keep_text=True) for text in reviews["text"]]
    open_sink(location=log_db).write(logged)
    record_feedback(
        [{"request_id": r["request_id"], "label": y} for r, y in zip(logged, reviews["label"])], None, log_db
    )

    log_url = f"{log_db}&password={LOG_PASSWORD}&token=${{FTFLOW_TEST_LOG_REF}}"
    fed = validate_only(
        config=small_config(tmp_path, "data.source.kind=feedback", f"data.source.log_location={log_url}")
    )
    assert fed["rows"]["train"] > 0
    odd_url = f"postgresql+psycopg://reader:{ODD_LOG_PASSWORD}@127.0.0.1:{_closed_port()}/predictions"
    cfg = small_config(tmp_path, "data.source.kind=feedback", f"data.source.log_location={odd_url}")
    assert cfg.data.source.log_location == odd_url  # the override kept every odd character
    with pytest.raises(
        ValueError, match=re.escape("feedback source feedback:*@postgresql+psycopg://reader:***@")
    ) as err:
        validate_only(config=cfg)
    return [str(err.value)]


def _score_commands(registered: dict, db: Path, tmp_path: Path, monkeypatch, capfd) -> list[str]:
    """`ftflow score` in this process: a SQL input with a literal password; one with / # ? and a space that
    cannot connect; a tracking URI whose password holds '@' and a space, on a closed port. What it printed."""
    from flows.ops.cli import main

    for name, value in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        monkeypatch.setenv(name, value)  # what the command sets, put back after the test
    for suffix in ("PASSWORD", "PASSWORD_"):
        monkeypatch.delenv(f"FTFLOW_SCORE_INPUT_{suffix}", raising=False)
    model = f"{registered['name']}/{registered['version']}"
    out = str(tmp_path / "scored.parquet")
    query = ["--query", "SELECT text, label FROM reviews LIMIT 40", "--output", out, "--workers", "1"]
    sql_input = f"sqlite:///file:{db}?uri=true&mode=ro&password={SCORE_PASSWORD}"
    capfd.readouterr()
    assert main(["score", model, "--input", sql_input, *query]) == 0
    assert len(pd.read_parquet(out)) == 40
    odd_input = f"postgresql+psycopg://reader:{ODD_INPUT_PASSWORD}@127.0.0.1:{_closed_port()}/x"
    assert main(["score", model, "--input", odd_input, *query]) == 1
    refused = capfd.readouterr()
    # The flow was given a reference in place of the password, and names it so.
    shown = "error: SQL source sql:postgresql+psycopg://reader:${FTFLOW_SCORE_INPUT_PASSWORD}@127.0.0.1"
    assert shown in refused.err and "check --input" in refused.err, refused.err[-3000:]
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"http://ops:{ODD_TRACKING_PASSWORD}@127.0.0.1:{_closed_port()}")
        m.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        m.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        assert main(["score", model, "--input", sql_input, *query]) == 1
    tracking_failed = capfd.readouterr()
    assert "the MLflow tracking store at http://ops:***@127.0.0.1" in tracking_failed.err, tracking_failed.err[-3000:]
    return [refused.out, refused.err, tracking_failed.out, tracking_failed.err]


def _flows_under_an_unreachable_tracking_server(cfg, monkeypatch) -> list[str]:
    """The training, promotion and monitor flows with the tracking URI's password in MLflow's error text:
    each fails with it masked, in the exception (the CLI's line) and in the Prefect state message."""
    from flows.deploy import promote
    from flows.monitor import monitor
    from flows.training import validate_only
    from tasks.platform.tracking import TrackingError

    said = []
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"http://ops:{ODD_TRACKING_PASSWORD}@127.0.0.1:{_closed_port()}")
        m.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        m.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        for run in (
            lambda: validate_only(config=cfg),
            lambda: promote("test-secrets"),
            lambda: monitor("test-secrets"),
        ):
            with pytest.raises(
                TrackingError, match=r"the MLflow tracking store at http://ops:\*\*\*@127\.0\.0\.1"
            ) as e:
                run()
            said.append(str(e.value))
    return said


def test_no_canary_reaches_the_store_run_folder_or_prefect(prefect_harness, csv_server, tmp_path, monkeypatch, capfd):
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_DATABASE_CONNECTION_URL

    from flows.training import fine_tune, validate_only

    url, sha, folder = csv_server
    # A URL source: one literal token (masked) and one by reference (expanded in memory only).
    monkeypatch.setenv("FTFLOW_TEST_SIG", REF_TOKEN)
    cfg = small_config(
        tmp_path,
        "data.source.kind=url",
        f"data.source.url={url}&sig=${{FTFLOW_TEST_SIG}}",
        f"data.source.sha256={sha}",
        "data.max_rows=300",
        "registry.model_name=test-secrets",
        "registry.experiment=tests-secrets",
        "export.quantize=false",
    )
    result = fine_tune(config=cfg)
    assert result["registered"] and (Path(result["run_dir"]) / "model" / "README.md").exists()
    # A SQL source whose URL carries a literal password (SQLite ignores the unknown URI parameter).
    db = folder / "reviews.db"
    with sqlite3.connect(db) as conn:
        pd.read_csv(folder / "reviews.csv").to_sql("reviews", conn, index=False)
    cfg_sql = small_config(
        tmp_path,
        "data.source.kind=sql",
        "data.source.query=SELECT text, label FROM reviews",
        f"data.source.connection=sqlite:///file:{db}?uri=true&mode=ro&password={PASSWORD}",
        "registry.experiment=tests-secrets",
    )
    validated = validate_only(config=cfg_sql)
    assert validated["rows"]["train"] > 0
    said = _feedback_sources(tmp_path, folder, monkeypatch)
    said += _score_commands(result["registered"], db, tmp_path, monkeypatch, capfd)
    said += _flows_under_an_unreachable_tracking_server(cfg_sql, monkeypatch)
    APILogHandler().flush()  # the Prefect logs are in its database before it is searched

    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1]).parent
    places = [
        Path(os.environ["FTFLOW_MLRUNS"]),
        tmp_path / "runs",
        prefect_db,
        Path(PREFECT_HOME.value()),
        Path(os.environ["FTFLOW_CACHE"]),
    ]
    secrets = [TOKEN, PASSWORD, REF_TOKEN, LOG_PASSWORD, LOG_REF, SCORE_PASSWORD]
    odd = [ODD_LOG_PASSWORD, ODD_INPUT_PASSWORD, ODD_TRACKING_PASSWORD]
    needles = [v.encode() for v in secrets + odd + [re.split(r"[/#? @]", v)[0] for v in odd]]
    assert sum(1 for p in places for f in p.rglob("*") if f.is_file()) > 50  # the search saw real stores
    assert _files_holding(places, needles) == []
    assert [n.decode() for n in needles for text in said if n.decode() in text] == [], said
    # The search can see them: the parameters and the config are there, masked.
    assert _files_holding([prefect_db], [b"token=***"]) and _files_holding([tmp_path / "runs"], [b"password=***"])
    # ... and the new sinks: the log_location (config.yaml, Prefect), the score run's parameters and lineage.
    assert _files_holding([tmp_path / "runs"], [b"reader:***@127.0.0.1"]) and _files_holding(
        [prefect_db], [b"reader:***@127.0.0.1"]
    )
    assert len(_files_holding([prefect_db], [b"token=${FTFLOW_TEST_LOG_REF}", b"${FTFLOW_SCORE_INPUT_PASSWORD}"])) >= 2
    assert _files_holding([tmp_path / "runs"], [b"&password=***&token=${FTFLOW_TEST_LOG_REF}"])
