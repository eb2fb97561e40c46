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
