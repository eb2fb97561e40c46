"""The ONNX Runtime session every ONNX scorer uses."""

from __future__ import annotations

from pathlib import Path


def create_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session; `threads` sets the intra-op threads (default: ONNX Runtime's choice)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"ONNX model {path} does not exist; export the run first (the export stage "
                                f"writes model.onnx and model.int8.onnx into RUN/onnx)")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def quantises_per_call(path: str | Path) -> bool:
    """Whether the graph quantises activations at run time (dynamic int8).

    DynamicQuantizeLinear takes one scale over its whole input tensor, so a row's answer would depend
    on the other rows (and their padding) in the same call: on the quickstart model 2% of test labels
    changed between batch 1 and batch 32. Such a model must be run one row per call.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type == "DynamicQuantizeLinear" for node in graph.node)
