"""What tests share besides fixtures: the repo root and the small quickstart config.

Imported as `tests.support` everywhere (never `conftest`, which pytest imports under its own name).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def small_config(tmp: Path, *overrides: str):
    """The quickstart, shrunk to train in seconds on 2 cores."""
    from tasks.config import load_config

    return load_config(ROOT / "configs" / "quickstart.yaml", [
        "data.max_rows=360", "model.max_length=32", "training.epochs=1", "training.train_batch_size=16",
        "training.logging_steps=5", f"run_dir={tmp / 'runs'}", "data.validation.min_rows=50", *overrides,
    ])


def promoted_copy(flow_result: dict, name: str, workdir: Path) -> dict:
    """The session's trained model registered as `name` and promoted through the real gate; its candidate dict."""
    from tasks.registry import register, tracking
    from tasks.registry.holdout import load_candidate
    from tasks.registry.promote import promote_challenger

    trained = flow_result["result"]["registered"]
    c = tracking.client()
    c.create_registered_model(name)
    version = c.create_model_version(name, source=trained["source"], run_id=flow_result["result"]["run_id"],
                                     tags=dict(register.get_version(trained["name"], trained["version"]).tags))
    register.set_alias(name, register.CHALLENGER, version.version)
    assert promote_challenger(name).promoted
    return load_candidate(name, register.CHAMPION, workdir)
