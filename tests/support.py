"""What tests share besides fixtures: the repo root, the small quickstart config, and helpers that
more than one test file calls (the stages in flow order, commands started at the same instant, an
app served on loopback).

Imported as `tests.support` everywhere (never `conftest`, which pytest imports under its own name,
and never another test file: pytest imports each test file under its bare name, so a second import
as `tests....` would load it twice).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def small_config(tmp: Path, *overrides: str):
    """The quickstart, shrunk to train in seconds on 2 cores."""
    from tasks.config import load_config

    return load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            "data.max_rows=360",
            "model.max_length=32",
            "training.epochs=1",
            "training.train_batch_size=16",
            "training.logging_steps=5",
            "training.min_updates=0",  # the schedule these tests were sized for (tests/unit/test_sizing.py covers it)
            "training.strategy=fine_tune",  # the contrastive phase has its own tests (tests/integration/test_head_init.py)
            f"run_dir={tmp / 'runs'}",
            "data.validation.min_rows=50",
            # 360 rows for one epoch: plumbing, not a model that beats a bag of words; the gate's refusal of
            # such a model is tested on its own (tests/unit/test_baselines.py, tests/integration/test_flow.py).
            "registry.allow_below_baseline=true",
            *overrides,
        ],
    )


def promoted_copy(flow_result: dict, name: str, workdir: Path) -> dict:
    """The session's trained model registered as `name` and promoted through the real gate; its candidate dict."""
    from tasks.monitoring.shadow import check_shadow
    from tasks.platform import tracking
    from tasks.registry import register
    from tasks.registry.holdout import load_candidate
    from tasks.registry.promote import promote_challenger

    trained = flow_result["result"]["registered"]
    c = tracking.client()
    c.create_registered_model(name)
    version = c.create_model_version(
        name,
        source=trained["source"],
        run_id=flow_result["result"]["run_id"],
        tags=dict(register.get_version(trained["name"], trained["version"]).tags),
    )
    register.set_alias(name, register.CHALLENGER, version.version)
    assert promote_challenger(name, shadow_gate=check_shadow).promoted
    return load_candidate(name, register.CHAMPION, workdir)


def prepare(cfg, folder: Path) -> dict:
    """collect + clean through the plain functions; the clean reference train_model takes."""
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data

    raw = collect_data(cfg.data, folder)
    return clean_data(raw.path, cfg.data, folder)


def run_pipeline(cfg, folder: Path) -> tuple[dict, dict, dict]:
    """The stages' plain functions in flow order; returns (clean reference, evaluation, export)."""
    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.export import export_model
    from tasks.modelling.train import train_model

    clean_ref = prepare(cfg, folder)
    trained = train_model(clean_ref, cfg, folder)
    evaluation = evaluate_model(trained.model_dir, clean_ref, cfg, folder, "test")
    exported = export_model(trained.model_dir, clean_ref, cfg, folder)
    return clean_ref, evaluation, exported


def start_together(commands: list[list[str]], tmp: Path, env: dict | None = None, timeout: float = 600) -> list:
    """Run `ftflow` commands in separate processes released at the same instant; return (exit code, output)."""
    import os
    import subprocess
    import sys
    import time

    go = tmp / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "start_together.py"), str(go), *cmd],
            env=env,
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cmd in commands
    ]
    deadline = time.monotonic() + 180
    while len(list(tmp.glob("go.ready-*"))) < len(procs) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
        time.sleep(0.1)
    go.touch()
    return [(p.wait(timeout=timeout), p.communicate()[0]) for p in procs]


@contextmanager
def running(app):
    """Serve `app` with uvicorn in a thread on a free loopback port; yield its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start; see the log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def export_ner_bundle(folder: Path) -> Path:
    """The packaged MiniLM with an untrained token-classification head, exported as an NER serving bundle."""
    from transformers import AutoModelForTokenClassification

    return _export_minilm(folder, AutoModelForTokenClassification, "ner", ["O", "B-LOC", "I-LOC"])


def export_classifier_bundle(folder: Path) -> Path:
    """The packaged MiniLM with an untrained two-class head: a classification bundle (its texts are normalised)."""
    from transformers import AutoModelForSequenceClassification

    return _export_minilm(folder, AutoModelForSequenceClassification, "classification", ["negative", "positive"])


def _export_minilm(folder: Path, auto_class, task: str, labels: list[str]) -> Path:
    from transformers import AutoTokenizer

    from tasks.bundle import ModelMeta, write_meta
    from tasks.modelling.encode import resolve_model_path
    from tasks.modelling.export import export_onnx

    base = resolve_model_path("minilm")
    model = auto_class.from_pretrained(base, num_labels=len(labels))
    tok = AutoTokenizer.from_pretrained(base)
    export_onnx(model, tok, folder / "model.onnx", 17)
    tok.save_pretrained(str(folder))
    # Through the typed record, so the bundle stays one the service reads when the record gains a field.
    meta = ModelMeta(
        task=task,
        labels=labels,
        max_length=32,
        base_model="minilm",
        config_digest="untrained-test-head",
        data_digest="untrained-test-head",
        serving_file="model.onnx",
    )
    write_meta(folder, meta)
    return folder
