"""`model.blend: auto`: the bag-of-words baseline exported to ONNX, and the blend's weight chosen on validation.

The baseline's TF-IDF + logistic regression becomes an ONNX graph (skl2onnx) that the inference core runs
beside the model (tasks/inference/blend.py); evaluation scores it through that same graph, so what is
measured is what serves. The weight is the one, on a grid, whose mixture of the temperature-scaled model
probabilities and the baseline's has the lowest log loss on validation (a proper score: it rewards
probabilities, not a lucky threshold on a few rows). Weight 1 means the model serves alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tasks.inference.blend import BaselineScorer, Blend, bag_of_words_text, mix_logits
from tasks.kinds.decision import softmax
from tasks.modelling.calibration import fit_temperature
from tasks.modelling.metrics import compute_metrics_for, greater_is_better

log = logging.getLogger(__name__)

WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
BASELINE_ONNX = "bag_of_words.onnx"  # in RUN/baselines; the bundle holds it as baseline.onnx
PARITY_ATOL = 1e-4  # the graph against scikit-learn on the training texts


def fix_sublinear_tf(graph) -> int:
    """Make skl2onnx's sublinear tf what scikit-learn computes: 1 + log(tf) where tf > 0, else 0.

    skl2onnx 1.20 writes log(tf + 1), so a word seen twice weighs log 3 instead of 1 + log 2 and the
    probabilities move by up to 0.002 on short texts (more on long ones). Returns the nodes rewritten.
    """
    # heavy (onnx): loaded when this runs, so importing tasks.modelling.blend stays light
    from onnx import helper, numpy_helper

    ones = {
        i.name for i in graph.initializer if numpy_helper.to_array(i).size and np.all(numpy_helper.to_array(i) == 1)
    }
    produced = {out: node for node in graph.node for out in node.output}
    fixed = 0
    for log_node in [n for n in graph.node if n.op_type == "Log"]:
        add = produced.get(log_node.input[0])
        if add is None or add.op_type != "Add" or add.input[1] not in ones:
            continue
        tf, one, out = add.input[0], add.input[1], log_node.output[0]
        zero = f"{out}_zero"
        graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.float32), zero))
        position = list(graph.node).index(add)
        graph.node.remove(add)
        graph.node.remove(log_node)
        for k, node in enumerate(
            [
                helper.make_node("Log", [tf], [f"{out}_log"]),
                helper.make_node("Add", [f"{out}_log", one], [f"{out}_plus1"]),
                helper.make_node("Greater", [tf, zero], [f"{out}_seen"]),
                helper.make_node("Where", [f"{out}_seen", f"{out}_plus1", zero], [out]),
            ]
        ):
            graph.node.insert(position + k, node)
        fixed += 1
    return fixed


def export_bag_of_words(vectorizer, model, texts: list[str], path: Path) -> str | None:
    """The fitted TF-IDF + logistic regression as an ONNX graph of one string input; None when it cannot serve.

    The vectorizer must read bag_of_words_text's output (lowercase off, words split on spaces). The graph
    is checked against scikit-learn on `texts`; a mismatch beyond PARITY_ATOL leaves no file, said in the log.
    """
    # heavy (skl2onnx, sklearn): loaded when this runs, so importing tasks.modelling.blend stays light
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.pipeline import Pipeline

    if list(model.classes_) != list(range(len(model.classes_))) or len(model.classes_) < 2:
        log.info("blend: the bag of words saw only classes %s in train, so it cannot be blended", model.classes_)
        return None
    pipe = Pipeline([("tfidf", vectorizer), ("linear", model)])
    options = {id(model): {"zipmap": False}, id(vectorizer): {"separators": [" "], "locale": "C"}}
    graph = to_onnx(pipe, initial_types=[("text", StringTensorType([None, 1]))], options=options, target_opset=18)
    if vectorizer.sublinear_tf:
        fix_sublinear_tf(graph.graph)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(graph.SerializeToString())
    sample = texts[:2000]
    got = BaselineScorer(tmp).probabilities(sample)
    want = pipe.predict_proba([bag_of_words_text(t) for t in sample])
    gap = float(np.abs(got - want).max()) if len(sample) else 0.0
    if gap > PARITY_ATOL:
        tmp.unlink()
        log.warning("blend: the bag of words' ONNX graph differs from scikit-learn by %.2g; not blended", gap)
        return None
    tmp.replace(path)
    return str(path)


def blended_nll(model_probs: np.ndarray, baseline: np.ndarray, refs: np.ndarray, weight: float) -> float:
    """The mixture's mean negative log-likelihood of the true classes."""
    p = weight * model_probs + (1.0 - weight) * baseline
    return float(-np.log(np.clip(p[np.arange(len(refs)), refs], 1e-12, None)).mean())


def choose_blend(
    logits: np.ndarray, baseline: np.ndarray, refs: np.ndarray, task: str, labels: list[str], metric: str
) -> tuple[Blend | None, dict[str, Any]]:
    """The validation-chosen blend (None: the model alone is best) and what each side reached there."""
    temperature = fit_temperature(logits, refs)
    model_probs = softmax(logits.astype(np.float32) / np.float32(temperature))
    losses = {w: blended_nll(model_probs, baseline, refs, w) for w in WEIGHTS}
    weight = min(WEIGHTS, key=lambda w: (losses[w], -w))  # ties go to the model
    blend = Blend(weight, temperature) if weight < 1.0 else None
    mixed = np.stack(mix_logits(list(logits), baseline, blend or Blend(1.0, temperature)))

    def score(probs: np.ndarray) -> float:
        return float(compute_metrics_for(task, probs.argmax(-1).tolist(), refs.tolist(), labels)[metric])

    report = {
        "weight": weight,
        "temperature": temperature,
        "rows": len(refs),
        "metric": metric,
        "model": score(model_probs),
        "baseline": score(baseline),
        "blend": score(mixed),
        "nll_model": losses[1.0],
        "nll_baseline": losses[0.0],
        "nll_blend": losses[weight],
    }
    report["text"] = describe_blend(report)
    return blend, report


def describe_blend(r: dict[str, Any]) -> str:
    """What validation said about the model, the baseline and the blend, in plain words."""
    better = greater_is_better(r["metric"])
    baseline_wins = r["baseline"] > r["model"] if better else r["baseline"] < r["model"]
    head = (
        f"On validation ({r['rows']} rows) the bag-of-words baseline beats the fine-tuned model: "
        if baseline_wins
        else f"On validation ({r['rows']} rows): "
    )
    figures = (
        f"{r['metric']} model {r['model']:.4f}, baseline {r['baseline']:.4f}, blend {r['blend']:.4f}; "
        f"log loss {r['nll_model']:.4f}, {r['nll_baseline']:.4f}, {r['nll_blend']:.4f}. "
    )
    if r["weight"] >= 1.0:
        return head + figures + "The model serves alone (model.blend auto chose weight 1)."
    return (
        head
        + figures
        + (
            f"model.blend auto serves {r['weight']:.2f} x the model's probabilities + {1 - r['weight']:.2f} x the "
            "baseline's (both run by the inference core from the bundle)."
        )
    )


def blend_text(record: dict | None) -> str:
    """What model.blend auto chose on validation, for the model card ("" when it did not run)."""
    if record is None or "blend" not in record:
        return ""
    return f"Blend (model.blend auto): {record['blend']['validation']['text']}"
