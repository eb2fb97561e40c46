"""Export: the fine-tuned model as a self-contained ONNX serving bundle, checked for parity.

Bundle (RUN/onnx): model.onnx (fp32, dynamic batch and sequence axes), model.int8.onnx
(dynamic int8 quantisation), tokenizer files, finetune_flow.json (task, labels, max
length, long-text reading, text normalisation, which file serves) and export_report.json (parity, int8 gate).

Both checks run end to end on the inference core, the path that serves: the test split's raw
texts through normalisation, `tokenizers`, length buckets, ONNX Runtime and decoding.
- parity: fp32 ONNX against the PyTorch model on the same texts: the same answer on every row
  and probabilities (regression: values) within `export.parity_atol`. Like is compared with like:
  both sides apply the model's recorded decision rule (temperature and threshold, from evaluation).
- int8 gate: int8 serves when it loses at most `export.int8_max_metric_drop` of the metric; the
  report also gives the share of test rows whose answer int8 changes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.bundle import DecisionRecord, ModelMeta, read_meta, write_meta
from tasks.config import PipelineConfig
from tasks.inference.batching import INPUT_NAMES
from tasks.inference.blend import Blend, BlendedScorer
from tasks.inference.compare import compare_answers
from tasks.inference.decode import Decision, Scores
from tasks.inference.normalize import recorded_rules
from tasks.inference.predictor import OnnxPredictor
from tasks.inference.windows import long_text_of_bundle
from tasks.io import atomic_path, read_frame, read_json, write_json
from tasks.kinds import kind_of
from tasks.modelling.blend import BASELINE_ONNX
from tasks.modelling.evaluate import DECISION_FILE, load_trained
from tasks.modelling.metrics import greater_is_better, primary_metric
from tasks.modelling.predict import metrics_of, score_frame, torch_forward
from tasks.modelling.sizing import with_recorded_length
from tasks.results import CleanResult, ExportResult

log = logging.getLogger(__name__)

FP32, INT8 = "model.onnx", "model.int8.onnx"
# A regression answer "changes" under int8 when it moves by more than this share of the range of the
# fp32 answers (a classification or NER answer changes when a label or tag does).
REGRESSION_CHANGE = 0.01


def export_onnx(model, tokenizer, path: Path, opset: int) -> list[str]:
    """Trace the model to ONNX with dynamic batch and sequence axes; return the input names."""
    # heavy (torch): loaded when this runs, so importing tasks.modelling.export stays light
    import torch

    sample = tokenizer(
        ["an example to trace", "a second, somewhat longer example to trace"], padding=True, return_tensors="pt"
    )
    names = [n for n in INPUT_NAMES if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = (
        {0: "batch", 1: "sequence"}
        if model.config.architectures and "TokenClassification" in model.config.architectures[0]
        else {0: "batch"}
    )
    model.eval()
    with torch.inference_mode():
        # The TorchScript exporter writes one self-contained file, which quantisation needs.
        torch.onnx.export(
            model,
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


def quantize_int8(src: Path, dst: Path) -> None:
    # heavy (onnx, onnxruntime): loaded when this runs, so importing tasks.modelling.export stays light
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # After the transformer fusions (export.optimize) shape inference cannot type the outputs of
    # the com.microsoft ops; without a default type the quantiser stops with "Unable to find data type".
    quantize_dynamic(
        str(src), str(dst), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}
    )


def optimize_graph(path: Path, model_config) -> None:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU), in place."""
    # heavy (onnxruntime): loaded when this runs, so importing tasks.modelling.export stays light
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(path), model_type="bert", num_heads=model_config.num_attention_heads, hidden_size=model_config.hidden_size
    )
    opt.save_model_to_file(str(path))


def check_parity(reference: Scores, onnx: Scores, atol: float) -> dict:
    """fp32 ONNX through the core against the PyTorch model: the same answer on every row, probabilities within atol."""
    found = compare_answers(reference, onnx, atol)
    passed = found["changed_rows"] == 0 and found["max_abs_diff"] <= atol
    return {
        "passed": bool(passed),
        "max_abs_diff": found["max_abs_diff"],
        "argmax_equal": found["changed_rows"] == 0,
        "atol": atol,
        "rows": found["rows"],
        "changed_rows": found["changed_rows"],
        "compared": "value" if reference.kind.predicts_value else "probability",
    }


def gate_int8(fp32_metrics: dict, int8_metrics: dict, metric: str, max_drop: float, fp32: Scores, int8: Scores) -> dict:
    """int8 serves only if it loses at most `max_drop` of the task metric; says how many answers it changes."""
    a, b = fp32_metrics[metric], int8_metrics[metric]
    loss = (a - b) if greater_is_better(metric) else (b - a)
    ok = loss <= max_drop
    spread = float(np.ptp(fp32.predictions)) if fp32.kind.predicts_value and len(fp32) else 0.0
    changed = compare_answers(fp32, int8, REGRESSION_CHANGE * spread)
    return {
        "metric": metric,
        "fp32": a,
        "int8": b,
        "loss": loss,
        "max_drop": max_drop,
        "passed": bool(ok),
        "changed_rows": changed["changed_rows"],
        "changed_share": changed["changed_share"],
        "rows": changed["rows"],
        "max_abs_diff": changed["max_abs_diff"],
        "why": None if ok else f"int8 loses {loss:.4f} {metric} (> {max_drop}); serving fp32",
    }


def bundle_meta(model_dir: Path, cfg: PipelineConfig, decision: dict | None) -> ModelMeta:
    """The serving bundle's record, built once: the model folder's, evaluation's decision, the clean stage's text
    rules, and fp32 serving until the int8 gate says otherwise."""
    return read_meta(model_dir).model_copy(
        update={
            "decision": DecisionRecord.model_validate(decision) if decision is not None else None,
            "normalize": recorded_rules(cfg.data.clean),
            "serving_file": FP32,
        }
    )


def decision_of_run(run_dir: Path, cfg: PipelineConfig) -> dict | None:
    """The decision record evaluation wrote in this run (RUN/evaluation/decision.json), for a caller that has
    only the run folder (a resumed flow); None without one, with a warning for a kind that takes one: its
    bundle then answers with plain probabilities, not the calibration and threshold it would be evaluated with."""
    path = run_dir / "evaluation" / DECISION_FILE
    if path.is_file():
        return read_json(path)
    if kind_of(cfg.data.task).calibrated:
        log.warning("no decision record at %s (the model was not evaluated): the bundle answers uncalibrated", path)
    return None


def raw_test_frame(test: pd.DataFrame, data: CleanResult) -> tuple[pd.DataFrame, str]:
    """The test rows with their texts as collected, before cleaning (when the run's raw snapshot is at hand).

    The core must normalise them into what the clean stage gave the PyTorch model, or parity fails.
    """
    raw_path = Path(data.dir).parent / "raw" / "all.parquet"  # collect's snapshot beside data/clean
    cols = [c for c in ("text", "text_pair") if c in test.columns]
    if not cols or "raw_index" not in test.columns or not raw_path.exists():
        return test, "clean"
    raw = read_frame(raw_path).iloc[test["raw_index"].to_numpy()]
    return test.assign(**{c: raw[c].to_numpy() for c in cols}), "raw"


def export_model(
    model_dir: str | Path,
    data: CleanResult,
    cfg: PipelineConfig,
    run_dir: str | Path,
    decision: dict | None = None,
) -> ExportResult:
    """Export fp32 (and int8) ONNX, check parity and the int8 gate on the core, assemble the serving bundle.

    decision: evaluation's decision record (EvaluationResult.decision); None reads the one evaluation wrote in
    this run folder. The bundle is built in a temporary folder and moved into place whole: a kill or a full
    disk mid-export leaves the previous bundle (or none), never a folder with half its files.
    """
    final = Path(run_dir) / "onnx"
    if decision is None:
        decision = decision_of_run(Path(run_dir), cfg)
    with atomic_path(final) as out:
        out.mkdir(parents=True)
        report = build_bundle(model_dir, data, cfg, out, decision, Path(run_dir) / "baselines" / BASELINE_ONNX)
    return ExportResult(
        dir=str(final),
        fp32=str(final / FP32),
        int8=str(final / INT8) if cfg.export.quantize else None,
        parity=report["parity"],
        int8_gate=report["int8"],
        serving_file=report["serving_file"],
        report_path=str(final / "export_report.json"),
    )


def build_bundle(
    model_dir: str | Path,
    data: CleanResult,
    cfg: PipelineConfig,
    out: Path,
    decision: dict | None = None,
    baseline_onnx: Path | None = None,
) -> dict:
    """Write the serving bundle into `out` and check it on the core; return the export report.

    baseline_onnx: the bag of words' graph (RUN/baselines), copied in when the decision record blends it.
    """
    model, tokenizer, meta = load_trained(model_dir)
    cfg = with_recorded_length(cfg, meta)  # max_length as trained (auto resolved), not as configured
    task, batch = cfg.data.task, cfg.training.eval_batch_size
    export_onnx(model, tokenizer, out / FP32, cfg.export.opset)
    if cfg.export.optimize:
        optimize_graph(out / FP32, model.config)
    tokenizer.save_pretrained(str(out))
    record = bundle_meta(Path(model_dir), cfg, decision)
    write_meta(out, record)
    blend = Blend.of_record(decision)
    scorer = None
    if blend is not None:
        if baseline_onnx is None or not baseline_onnx.is_file():
            raise FileNotFoundError(
                f"the decision record blends the bag-of-words baseline but its graph {baseline_onnx} is missing; "
                "run the baselines stage again (or set model.blend off)"
            )
        shutil.copyfile(baseline_onnx, out / blend.file)
        scorer = BlendedScorer.load(blend, out / blend.file)
    test = read_frame(data.splits["test"])
    rule = Decision.of_meta(record.as_dict())
    reference = score_frame(
        torch_forward(model),
        tokenizer,
        test,
        task,
        data.labels,
        cfg.model.length(),
        batch,
        rule,
        long_text_of_bundle(meta),
        scorer,
    )["scores"]
    raw, texts = raw_test_frame(test, data)
    fp32 = OnnxPredictor(out, model_file=FP32, batch_size=batch).predict_frame(raw)
    parity = {
        **check_parity(reference, fp32, cfg.export.parity_atol),
        "texts": texts,
        "temperature": rule.temperature,
        "threshold": rule.threshold,
        "blend_weight": blend.weight if blend is not None else None,
    }
    report: dict = {"parity": parity, "serving_file": FP32, "int8": None}
    if cfg.export.quantize:
        quantize_int8(out / FP32, out / INT8)
        int8 = OnnxPredictor(out, model_file=INT8, batch_size=batch).predict_frame(raw)
        scores = {"fp32": metrics_of(fp32, test), "int8": metrics_of(int8, test)}
        report["int8"] = gate_int8(
            scores["fp32"], scores["int8"], primary_metric(task), cfg.export.int8_max_metric_drop, fp32, int8
        )
        report["onnx_test_metrics"] = scores
        if report["int8"]["passed"]:
            report["serving_file"] = INT8
            write_meta(out, record.model_copy(update={"serving_file": INT8}))
    write_json(out / "export_report.json", report)
    return report
