"""The inference core: raw text to answer with ONNX Runtime and no torch.

Normalisation (the clean stage's own function), tokenisation with `tokenizers`, length-bucketed
batches, the ONNX Runtime session and decoding for every task kind. The export gate and parity
check, promotion's re-scoring, batch scoring, the service and the pyfunc model all call it, so
what was gated is what serves.
"""
