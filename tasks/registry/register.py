"""Register: log the serving bundle as an MLflow model and make it a registry version.

Every model-registry call of the project lives in this module (versions, aliases,
tags), so the deploy flow and the service go through the same door.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from tasks.bundle import read_meta
from tasks.config import PipelineConfig
from tasks.inference.blend import Blend
from tasks.io import read_frame
from tasks.kinds import kind_of
from tasks.platform import tracking
from tasks.results import CleanResult, EvaluationResult, ExportResult, RegisteredVersion, ValidationResult

CHALLENGER, CHAMPION = "challenger", "champion"
MODEL_ARTIFACT = "model"
# Version tags of the data validation: "passed" or "warnings" (with the count); absent when the
# version was registered without a validation result.
DATA_VALIDATION_TAG, DATA_WARNINGS_TAG = "data_validation", "data_validation_warnings"
PARITY_TAG = "parity_passed"
# "true" or "false": did the model beat the best baseline on its test split beyond the paired interval;
# absent when no baseline ran (NER, baselines.enabled false, versions older than the baselines).
BEATS_BASELINE_TAG = "beats_baseline"


class RegistrationRefused(ValueError):
    """A model that failed a required check is not registered."""


def git_commit() -> str:
    """The project's commit (with '-dirty' when the tree has changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


PYFUNC_MODEL_FILE = Path(__file__).resolve().parents[1] / "inference" / "pyfunc_model.py"


def save_serving_model(
    bundle_dir: str | Path, target: Path, example_texts: list, task: str, example_pairs: list | None = None
) -> Path:
    """Save the bundle as an MLflow pyfunc model (signature and input example included).

    Pair models get `text_pair` in the signature: MLflow drops input columns its schema lacks,
    and a pair model fed one sentence would answer without a word of complaint.
    """
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    kind = kind_of(task)
    example = pd.DataFrame({"text": [" ".join(t) if kind.is_token_level else str(t) for t in example_texts[:2]]})
    if kind.reads_pairs:
        if not example_pairs:
            raise ValueError(f"a {task} model needs example second texts (example_pairs) for its signature")
        example["text_pair"] = [str(t) for t in example_pairs[:2]]
    out_example = (
        pd.DataFrame({"label": ["x"] * len(example), "score": [0.5] * len(example)}) if kind.is_single_label else None
    )
    mlflow.pyfunc.save_model(
        # Models-from-code: the model is this file, run at load time; loading a version unpickles nothing.
        path=str(target),
        python_model=str(PYFUNC_MODEL_FILE),
        artifacts={"bundle": str(bundle_dir)},
        signature=infer_signature(example, out_example),
        input_example=example,
        # Explicit requirements: inferring them imports heavy libraries and needs the network.
        pip_requirements=["mlflow", "onnxruntime", "tokenizers", "numpy", "pandas", "pyarrow"],
        code_paths=[str(Path(__file__).resolve().parents[1])],
    )
    return target


def validation_tags(validation: ValidationResult | None) -> dict:
    """The data-validation tags of a version: passed, or warnings with their count; none without a result."""
    if validation is None:
        return {}
    if validation.warning_count:
        return {DATA_VALIDATION_TAG: "warnings", DATA_WARNINGS_TAG: str(validation.warning_count)}
    return {DATA_VALIDATION_TAG: "passed"}


def model_tags(
    cfg: PipelineConfig,
    data: CleanResult,
    metrics: dict,
    export: ExportResult,
    validation: ValidationResult | None,
) -> dict:
    tags = {
        "task": cfg.data.task,
        "config_name": cfg.name,
        "config_digest": cfg.digest(),
        "data_digest": data.digest,
        "git_commit": git_commit(),
        "base_model": cfg.model.name,
        PARITY_TAG: export.parity["passed"],
        "parity_max_abs_diff": f"{export.parity['max_abs_diff']:.2e}",
        "serving_file": export.serving_file,
        **validation_tags(validation),
    }
    if export.int8_gate:  # what quantisation costs: metric change and share of answers it changes
        gate = export.int8_gate
        tags.update(int8_metric_loss=f"{gate['loss']:.4f}", int8_changed_share=f"{gate['changed_share']:.4f}")
    tags.update({k: f"{v:.4f}" for k, v in metrics.items() if isinstance(v, float)})
    return tags


def baseline_tags(comparison: dict | None) -> dict:
    """The version's verdict against the best baseline (tasks/modelling/baselines.compare_with_baselines)."""
    if comparison is None:
        return {}
    return {
        BEATS_BASELINE_TAG: str(comparison["beats"]).lower(),
        "best_baseline": comparison["best_baseline"],
        "best_baseline_score": f"{comparison['best_baseline_score']:.4f}",
        "baseline_difference_interval": f"[{comparison['difference_ci_low']:+.4f}, {comparison['difference_ci_high']:+.4f}]",
    }


def log_serving_model(run_id: str, bundle_dir: str | Path, data: CleanResult, cfg: PipelineConfig) -> None:
    """The bundle as an MLflow pyfunc model in the run (input examples from the test split)."""
    test = read_frame(data.splits["test"])
    examples = list(test[kind_of(cfg.data.task).input_columns[0]].head(2))  # texts, or NER's words
    pairs = list(test["text_pair"].head(2)) if "text_pair" in test.columns else None
    with tempfile.TemporaryDirectory() as tmp:
        local = save_serving_model(bundle_dir, Path(tmp) / MODEL_ARTIFACT, examples, cfg.data.task, pairs)
        tracking.client().log_artifacts(run_id, str(local), MODEL_ARTIFACT)


def register_model(
    run_id: str,
    export: ExportResult,
    evaluation: EvaluationResult,
    data: CleanResult,
    cfg: PipelineConfig,
    validation: ValidationResult | None = None,
) -> RegisteredVersion:
    """Log the serving model to the run and register it as a new version with alias 'challenger'."""
    if not export.parity["passed"]:
        p = export.parity
        raise RegistrationRefused(
            f"ONNX parity check failed (max |Δlogit| {p['max_abs_diff']:.2e} > {p['atol']:.0e} or argmax "
            f"differs: {not p['argmax_equal']}); not registering. See {export.report_path}."
        )
    c = tracking.client()
    name = cfg.registry.model_name
    source = f"{c.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    tags = model_tags(cfg, data, evaluation.metrics, export, validation) | baseline_tags(evaluation.baselines)
    # A retry (or a resumed run) after the version was made finds it: no second version of the same
    # model, and the files a registered version (perhaps the champion) points at are not written again.
    made = [
        v
        for v in c.search_model_versions(
            f"name = {tracking.filter_value(name)} and run_id = {tracking.filter_value(run_id)}"
        )
        if v.source == source
    ]
    if made:
        version = made[0]
        for key, value in tags.items():
            c.set_model_version_tag(name, version.version, key, value)
    else:
        log_serving_model(run_id, export.dir, data, cfg)
        ensure_registered_model(name, f"finetune-flow {cfg.data.task} model ({cfg.name})")
        version = c.create_model_version(name, source=source, run_id=run_id, tags=tags)
    c.set_registered_model_alias(name, CHALLENGER, version.version)
    return RegisteredVersion(
        name=name,
        version=str(version.version),
        alias=CHALLENGER,
        source=source,
        model_uri=f"models:/{name}/{version.version}",
    )


def ensure_registered_model(name: str, description: str) -> None:
    """Create the registered model unless it exists (also when another run creates it at the same moment)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    try:
        c.get_registered_model(name)
        return
    except MlflowException:
        pass
    try:
        c.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def version_by_alias(name: str, alias: str):
    """The model version holding `alias`, or None (also when the model does not exist)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as e:
        # Only "no such model / alias" means None; an unreachable or broken store must say so.
        missing = e.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            e.error_code == "INVALID_PARAMETER_VALUE" and "not found" in str(e)
        )
        if missing:
            return None
        raise


def get_version(name: str, version: str | int):
    """One model version; the error lists the versions that exist."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client().get_model_version(name, str(version))
    except MlflowException:
        known = [v.version for v in list_versions(name)]
        raise ValueError(
            f"model '{name}' has no version {version}; versions: {known or 'none'} "
            f"(see `ftflow history {name}` or the MLflow UI)"
        ) from None


def list_versions(name: str) -> list:
    """Every version of a registered model, oldest first; empty when the model does not exist."""
    found = tracking.client().search_model_versions(f"name = {tracking.filter_value(name)}")
    return sorted(found, key=lambda v: int(v.version))


def set_alias(name: str, alias: str, version: str) -> None:
    tracking.client().set_registered_model_alias(name, alias, str(version))


def set_version_tags(name: str, version: str, tags: dict) -> None:
    c = tracking.client()
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, str(v))


def bundle_location(source: str) -> str:
    """The serving bundle's folder inside a registered pyfunc model (read from its MLmodel file)."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/MLmodel", dst_path=tmp)
        spec = yaml.safe_load(Path(mlmodel).read_text())
    try:
        rel = spec["flavors"]["python_function"]["artifacts"]["bundle"]["path"]
    except (KeyError, TypeError):
        raise ValueError(
            f"model at {source} is not a finetune-flow serving model (its MLmodel has no "
            f"python_function artifact 'bundle'); register it with `ftflow run`"
        ) from None
    return f"{source.rstrip('/')}/{rel}"


def download_bundle(name: str, version: str, dst: str | Path, serving_only: bool = True) -> Path:
    """Fetch a version's ONNX serving bundle into `dst`; return the bundle folder.

    serving_only skips the ONNX file the bundle does not serve (fp32 when int8 serves): half the bytes. A
    blended bundle's baseline graph (model.blend) serves too, so it comes.
    """
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    import mlflow.artifacts

    mv = get_version(name, version)
    where = bundle_location(mv.source)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = [f for f in mlflow.artifacts.list_artifacts(artifact_uri=where) if not f.is_dir]
    if not any(Path(f.path).name == "finetune_flow.json" for f in files):
        raise ValueError(f"model '{name}' version {version}: no finetune_flow.json in its bundle at {where}")
    skip: set[str] = set()
    if serving_only:
        mlflow.artifacts.download_artifacts(artifact_uri=f"{where}/finetune_flow.json", dst_path=str(dst))
        meta = read_meta(dst)
        blend = Blend.of_record(meta.as_dict().get("decision"))
        keep = {meta.serving_file or "model.onnx"} | ({blend.file} if blend is not None else set())
        skip = {Path(f.path).name for f in files if f.path.endswith(".onnx") and Path(f.path).name not in keep}
    for f in files:
        fname = Path(f.path).name
        if fname not in skip and not (dst / fname).exists():
            mlflow.artifacts.download_artifacts(artifact_uri=f"{where}/{fname}", dst_path=str(dst))
    return dst


def model_aliases(name: str) -> dict[str, str] | None:
    """A registered model's aliases ({alias: version}), or None when no model has that name."""
    # heavy (mlflow): loaded when this runs, so importing tasks.registry.register stays light
    from mlflow.exceptions import MlflowException

    try:
        model = tracking.client().get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def registered_names(limit: int = 20) -> list[str]:
    """Names of registered models (at most `limit`), for errors that say what exists."""
    return sorted(m.name for m in tracking.client().search_registered_models(max_results=limit))
