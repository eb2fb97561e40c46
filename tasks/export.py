"""Export: the fine-tuned model as a self-contained ONNX serving bundle, checked for parity.

Bundle (RUN/onnx): model.onnx (fp32, dynamic batch and sequence axes), model.int8.onnx
(dynamic int8 quantisation), tokenizer files, finetune_flow.json (task, labels, max
length) and export_report.json (parity, int8 gate, which file serves).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.config import PipelineConfig
from tasks.io import atomic_path, read_frame, read_json, write_json

FP32, INT8 = "model.onnx", "model.int8.onnx"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_onnx(model, tokenizer, path: Path, opset: int) -> list[str]:
    """Trace the model to ONNX with dynamic batch and sequence axes; return the input names."""
    import torch

    sample = tokenizer(["an example to trace", "a second, somewhat longer example to trace"],
                       padding=True, return_tensors="pt")
    names = [n for n in INPUTS if n in sample]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch", 1: "sequence"} if model.config.architectures and \
        "TokenClassification" in model.config.architectures[0] else {0: "batch"}
    model.eval()
    with torch.inference_mode():
        # The TorchScript exporter writes one self-contained file, which quantisation needs.
        torch.onnx.export(model, tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return names


def parity_batches(tokenizer, texts: list, max_length: int, task: str) -> list[dict[str, np.ndarray]]:
    """Batches of shapes unlike the export sample: batch 1, 3, 8 at short, medium and full length."""
    shapes = [(1, min(7, max_length)), (3, min(33, max_length)), (8, max_length)]
    batches = []
    for batch, length in shapes:
        chunk = (texts * (batch // max(1, len(texts)) + 1))[:batch]
        if task == "ner":
            enc = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=length,
                            padding="max_length", return_tensors="np")
        elif isinstance(chunk[0], tuple):
            enc = tokenizer([a for a, _ in chunk], [b for _, b in chunk], truncation=True, max_length=length,
                            padding="max_length", return_tensors="np")
        else:
            enc = tokenizer(chunk, truncation=True, max_length=length, padding="max_length", return_tensors="np")
        batches.append({k: enc[k].astype(np.int64) for k in INPUTS if k in enc})
    return batches


def check_parity(torch_fwd, onnx_fwd, batches, atol: float) -> dict:
    """Largest |Δlogit| and argmax agreement between two backends on each batch."""
    shapes, max_diff, same_argmax = [], 0.0, True
    for b in batches:
        a, o = torch_fwd(b), onnx_fwd(b)
        diff = float(np.abs(a - o).max())
        max_diff = max(max_diff, diff)
        if a.shape[-1] > 1:
            same_argmax &= bool((a.argmax(-1) == o.argmax(-1)).all())
        shapes.append({"shape": list(b["input_ids"].shape), "max_abs_diff": diff})
    return {"passed": bool(max_diff <= atol and same_argmax), "max_abs_diff": max_diff,
            "argmax_equal": same_argmax, "atol": atol, "shapes": shapes}


def quantize_int8(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # After the transformer fusions (export.optimize) shape inference cannot type the outputs of
    # the com.microsoft ops; without a default type the quantiser stops with "Unable to find data type".
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def optimize_graph(path: Path, model_config) -> None:
    """ONNX Runtime's transformer fusions (attention, layer norm, GELU), in place."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(str(path), model_type="bert", num_heads=model_config.num_attention_heads,
                                   hidden_size=model_config.hidden_size)
    opt.save_model_to_file(str(path))


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def sample_inputs(df, task: str) -> list:
    if task == "ner":
        return list(df["tokens"].head(8))
    if "text_pair" in df.columns:
        return list(zip(df["text"].head(8), df["text_pair"].head(8)))
    return list(df["text"].head(8))


def gate_int8(fp32_metrics: dict, int8_metrics: dict, metric: str, max_drop: float) -> dict:
    """int8 serves only if it loses at most `max_drop` of the task metric."""
    from tasks.metrics import greater_is_better

    a, b = fp32_metrics[metric], int8_metrics[metric]
    loss = (a - b) if greater_is_better(metric) else (b - a)
    ok = loss <= max_drop
    return {"metric": metric, "fp32": a, "int8": b, "loss": loss, "max_drop": max_drop, "passed": bool(ok),
            "why": None if ok else f"int8 loses {loss:.4f} {metric} (> {max_drop}); serving fp32"}


def export_model(model_dir: str | Path, data: dict, cfg: PipelineConfig, run_dir: str | Path) -> dict:
    """Export fp32 (and int8) ONNX, check parity and the int8 gate, assemble the serving bundle.

    The bundle is built in a temporary folder and moved into place whole: a kill or a full disk
    mid-export leaves the previous bundle (or none), never a folder with half its files.
    """
    final = Path(run_dir) / "onnx"
    with atomic_path(final) as out:
        out.mkdir(parents=True)
        report, parity = build_bundle(model_dir, data, cfg, out)
    return {"dir": str(final), "fp32": str(final / FP32), "int8": str(final / INT8) if cfg.export.quantize else None,
            "parity": parity, "int8_gate": report["int8"], "serving_file": report["serving_file"],
            "report_path": str(final / "export_report.json")}


def build_bundle(model_dir: str | Path, data: dict, cfg: PipelineConfig, out: Path) -> tuple[dict, dict]:
    """Write the serving bundle into `out`; return the export report and the parity result."""
    from tasks.evaluate import load_trained
    from tasks.metrics import primary_metric
    from tasks.predict import onnx_forward, score_frame, torch_forward

    model, tokenizer, _ = load_trained(model_dir)
    task = cfg.data.task
    export_onnx(model, tokenizer, out / FP32, cfg.export.opset)
    if cfg.export.optimize:
        optimize_graph(out / FP32, model.config)
    test = read_frame(data["splits"]["test"])
    fp32 = session(out / FP32)
    parity = check_parity(torch_forward(model), onnx_forward(fp32),
                          parity_batches(tokenizer, sample_inputs(test, task), cfg.model.max_length, task),
                          cfg.export.parity_atol)
    report: dict = {"parity": parity, "serving_file": FP32, "int8": None}
    if cfg.export.quantize:
        quantize_int8(out / FP32, out / INT8)
        metric = primary_metric(task)
        scores = {name: score_frame(onnx_forward(session(out / f)), tokenizer, test, task, data["labels"],
                                    cfg.model.max_length, cfg.training.eval_batch_size)["metrics"]
                  for name, f in (("fp32", FP32), ("int8", INT8))}
        report["int8"] = gate_int8(scores["fp32"], scores["int8"], metric, cfg.export.int8_max_metric_drop)
        report["onnx_test_metrics"] = scores
        if report["int8"]["passed"]:
            report["serving_file"] = INT8
    tokenizer.save_pretrained(str(out))
    bundle_meta = read_json(Path(model_dir) / "finetune_flow.json")
    bundle_meta["serving_file"] = report["serving_file"]
    write_json(out / "finetune_flow.json", bundle_meta)
    write_json(out / "export_report.json", report)
    return report, parity
