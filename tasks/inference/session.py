"""The ONNX Runtime session every ONNX scorer uses."""

from __future__ import annotations

import mmap
from pathlib import Path

# NodeProto's op_type field as it is stored: tag 0x22 (field 4, a string), length 21, the name.
_DYNAMIC_QUANTIZE_OP = b"\x22\x15DynamicQuantizeLinear"


def create_session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session; `threads` sets the intra-op threads (default: ONNX Runtime's choice)."""
    # heavy (onnxruntime): loaded when this runs, so importing tasks.inference.session stays light
    import onnxruntime as ort

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"ONNX model {path} does not exist; export the run first (the export stage "
            f"writes model.onnx and model.int8.onnx into RUN/onnx)"
        )
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
    # The serving image has ONNX Runtime but not the `onnx` package, and ONNX Runtime does not list a
    # graph's nodes: the file is searched for a node whose op_type field names the op.
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(_DYNAMIC_QUANTIZE_OP) >= 0
