import os
import subprocess
import sys

import pytest

from tasks.config import ConfigError, PipelineConfig, flatten_config, load_config
from tests.support import ROOT


def test_defaults_validate():
    cfg = PipelineConfig()
    assert cfg.model.name == "minilm" and cfg.training.optimizer == "adamw"


@pytest.mark.parametrize("preset", [None, "quickstart.yaml"])
def test_digest_is_one_per_content_whatever_the_route_or_process(tmp_path, preset):
    """Registry tags and resume checks compare digests made by other processes from a saved config.yaml."""
    path = ROOT / "configs" / preset if preset else None
    cfg = load_config(path)
    saved = tmp_path / "config.yaml"
    saved.write_text(cfg.to_yaml())
    assert load_config(saved).digest() == cfg.digest()
    code = f"from tasks.config import load_config; print(load_config({str(path) if path else None!r}).digest())"
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # another process, other str hashes
    assert other.stdout.strip() == cfg.digest()
    changed = load_config(path, ["training.seed=43"])
    assert changed.digest() != cfg.digest() and load_config(path, ["training.seed=43"]).digest() == changed.digest()


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_preset_loads(preset):
    cfg = load_config(ROOT / "configs" / preset)
    assert cfg.registry.model_name


def test_overrides_are_typed():
    cfg = load_config(
        ROOT / "configs" / "quickstart.yaml",
        ["training.epochs=2", "training.learning_rate=3e-5", "export.quantize=false"],
    )
    assert cfg.training.epochs == 2.0 and cfg.training.learning_rate == 3e-5 and cfg.export.quantize is False


def test_bad_value_names_field_value_and_allowed():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["training.optimizer=sgd"])
    msg = str(e.value)
    assert "training.optimizer" in msg and "'sgd'" in msg and "adamw" in msg


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match="training.epoch.*unknown field"):
        load_config(None, ["training.epoch=2"])


def test_missing_file_lists_presets():
    with pytest.raises(ConfigError, match="quickstart"):
        load_config("configs/nope.yaml")


def test_source_kind_requires_its_fields():
    with pytest.raises(ConfigError, match="url.*sha256|needs url, sha256"):
        load_config(None, ["data.source.kind=url"])


def test_pair_task_needs_pair_column():
    with pytest.raises(ConfigError, match="text_pair_column"):
        load_config(None, ["data.task=pair_classification"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["training.epochs"])


def test_flatten_has_dotted_keys():
    flat = flatten_config(PipelineConfig())
    assert flat["training.learning_rate"] == 5e-5 and flat["data.source.kind"] == "package"


def test_loss_must_fit_task():
    with pytest.raises(ConfigError, match="training.loss 'mse' does not fit data.task 'classification'"):
        load_config(None, ["training.loss=mse"])
    with pytest.raises(ConfigError, match="cross_entropy.*regression"):
        load_config(None, ["data.task=regression", "training.loss=cross_entropy"])
    with pytest.raises(ConfigError, match="label_smoothing applies to cross-entropy; set it to 0 for the focal loss"):
        load_config(None, ["training.loss=focal", "training.label_smoothing=0.1"])
    assert load_config(None, ["training.label_smoothing=0.1"]).training.label_smoothing == 0.1
