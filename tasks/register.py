"""Register: log the serving bundle as an MLflow model and make it a registry version.

Every model-registry call of the project lives in this module (versions, aliases,
tags), so the deploy flow and the service go through the same door.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from tasks import tracking
from tasks.config import PipelineConfig
from tasks.io import read_json

CHALLENGER, CHAMPION = "challenger", "champion"
MODEL_ARTIFACT = "model"


class RegistrationRefused(ValueError):
    """A model that failed a required check is not registered."""


def git_commit() -> str:
    """The project's commit (with '-dirty' when the tree has changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def _pyfunc_class():
    import mlflow.pyfunc

    class OnnxTextModel(mlflow.pyfunc.PythonModel):
        """pyfunc wrapper so `mlflow models serve -m models:/NAME@champion` answers too."""

        def load_context(self, context):
            from tasks.predictor import OnnxPredictor

            self.predictor = OnnxPredictor(context.artifacts["bundle"])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            if self.predictor.task == "ner":
                texts = [" ".join(t) if not isinstance(t, str) else t for t in model_input["text"]]
            else:
                texts = [str(t) for t in model_input["text"]]
            pairs = [str(t) for t in model_input["text_pair"]] if "text_pair" in model_input else None
            answers = self.predictor.predict(texts, pairs)
            return pd.DataFrame([{k: (v if not isinstance(v, (dict, list)) else str(v)) for k, v in a.items()}
                                 for a in answers])

    return OnnxTextModel


def save_serving_model(bundle_dir: str | Path, target: Path, example_texts: list, task: str) -> Path:
    """Save the bundle as an MLflow pyfunc model (signature and input example included)."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"text": [str(t) if task != "ner" else " ".join(t) for t in example_texts[:2]]})
    out_example = pd.DataFrame({"label": ["x"] * len(example), "score": [0.5] * len(example)}) \
        if task in ("classification", "pair_classification") else None
    mlflow.pyfunc.save_model(
        path=str(target), python_model=_pyfunc_class()(), artifacts={"bundle": str(bundle_dir)},
        signature=infer_signature(example, out_example), input_example=example,
        # Explicit requirements: inferring them imports heavy libraries and needs the network.
        pip_requirements=["mlflow", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas"],
        code_paths=[str(Path(__file__).resolve().parent)],
    )
    return target


def model_tags(cfg: PipelineConfig, data: dict, metrics: dict, export: dict, validation_ok: bool) -> dict:
    tags = {
        "task": cfg.data.task, "config_name": cfg.name, "config_digest": cfg.digest(),
        "data_digest": data["digest"], "git_commit": git_commit(), "base_model": cfg.model.name,
        "parity_passed": export["parity"]["passed"], "parity_max_abs_diff": f"{export['parity']['max_abs_diff']:.2e}",
        "serving_file": export["serving_file"], "data_validation_passed": validation_ok,
    }
    tags.update({k: f"{v:.4f}" for k, v in metrics.items() if isinstance(v, float)})
    return tags


def register_model(run_id: str, export: dict, evaluation: dict, data: dict, cfg: PipelineConfig,
                   validation_ok: bool = True) -> dict:
    """Log the serving model to the run and register it as a new version with alias 'challenger'."""
    from tasks.io import read_frame

    if not export["parity"]["passed"]:
        p = export["parity"]
        raise RegistrationRefused(
            f"ONNX parity check failed (max |Δlogit| {p['max_abs_diff']:.2e} > {p['atol']:.0e} or argmax "
            f"differs: {not p['argmax_equal']}); not registering. See {export['report_path']}."
        )
    c = tracking.client()
    test = read_frame(data["splits"]["test"])
    examples = list(test["tokens"].head(2)) if cfg.data.task == "ner" else list(test["text"].head(2))
    with tempfile.TemporaryDirectory() as tmp:
        local = save_serving_model(export["dir"], Path(tmp) / MODEL_ARTIFACT, examples, cfg.data.task)
        c.log_artifacts(run_id, str(local), MODEL_ARTIFACT)
    name = cfg.registry.model_name
    try:
        c.get_registered_model(name)
    except Exception:
        c.create_registered_model(name, description=f"finetune-flow {cfg.data.task} model ({cfg.name})")
    source = f"{c.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    tags = model_tags(cfg, data, evaluation["metrics"], export, validation_ok)
    version = c.create_model_version(name, source=source, run_id=run_id, tags=tags)
    c.set_registered_model_alias(name, CHALLENGER, version.version)
    return {"name": name, "version": str(version.version), "alias": CHALLENGER, "source": source,
            "model_uri": f"models:/{name}/{version.version}"}


def version_by_alias(name: str, alias: str):
    """The model version holding `alias`, or None."""
    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except Exception:
        return None


def set_alias(name: str, alias: str, version: str) -> None:
    tracking.client().set_registered_model_alias(name, alias, version)


def download_bundle(name: str, version: str, dst: str | Path) -> Path:
    """Fetch a version's ONNX serving bundle to a local folder."""
    import mlflow.artifacts

    mv = tracking.client().get_model_version(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{mv.source}/artifacts/bundle",
                                                     dst_path=str(dst)))
    return local if (local / "finetune_flow.json").exists() else Path(read_json(local))
