"""What a user would run instead of ftflow, for the benches' peer arms, and the CPU facts printed beside them.

- `cpu_line()`: the CPU model and the vector/matrix units it offers (AMX, AVX-512 with VNNI/BF16, or
  AVX2 only): the figures of one machine say little about another without them.
- `torch_model_dir(run_id)`: the fine-tuned PyTorch model folder (RUN/model) of a registered
  version's training run, the weights the ONNX bundle was exported from.
- `text_classifier(model_dir)`: a `transformers` text-classification pipeline on that folder, as its
  documentation shows it (PyTorch, CPU, truncation at the model's max_length), and `classify` to
  answer length-sorted texts with it.

The pipeline applies no calibration and no decision threshold: its probabilities are a plain
softmax of the logits and its label is the most probable one. Temperature scaling never changes the
most probable label, but a binary model's chosen threshold can; `retemper` applies a bundle's
temperature to the pipeline's probabilities (after the timing) so that they can be compared at all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# /proc/cpuinfo spellings (torch's capability names differ: avx512_f, avx512_vnni, ...).
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
AVX512_EXTRAS = {"VNNI": ("avx512_vnni",), "BF16": ("avx512_bf16",), "FP16": ("avx512_fp16",)}


def cpu_line() -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores: AMX (bf16, int8), AVX-512 (VNNI, BF16, FP16), AVX2' or '... AVX2 only'."""
    name, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and name == "unknown CPU":
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if not flags:  # not Linux: torch's own check (names with underscores)
        from tasks.modelling.precision import cpu_flags

        flags = {f.replace("avx512_f", "avx512f") for f in cpu_flags()}
    units = []
    amx = [f.removeprefix("amx_") for f in AMX_FLAGS if f in flags and f != "amx_tile"]
    if amx:
        units.append(f"AMX ({', '.join(amx)})")
    if "avx512f" in flags:
        extras = [k for k, names in AVX512_EXTRAS.items() if any(n in flags for n in names)]
        units.append("AVX-512" + (f" ({', '.join(extras)})" if extras else ""))
    if "avx2" in flags:
        units.append("AVX2" if units else "AVX2 only (no AVX-512, no AMX)")
    return f"{name}, {os.cpu_count()} cores: {', '.join(units) or 'no AVX2'}"


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def run_folder(run_id: str) -> Path:
    """The training run's folder (run_dir/NAME-ID8) as `flows/training.open_run` made it."""
    from tasks.platform import tracking

    run = tracking.client().get_run(run_id)
    base = Path(run.data.params.get("run_dir", "runs"))
    name = f"{run.info.run_name}-{run_id[:8]}"
    candidates = [base / name] if base.is_absolute() else [Path.cwd() / base / name, ROOT / base / name]
    candidates += sorted((ROOT / "runs").glob(f"*-{run_id[:8]}"))
    for folder in candidates:
        if (folder / "run.json").exists():
            return folder
    raise SystemExit(
        f"the run folder of training run {run_id} ({name}) is not on this machine (looked in "
        f"{', '.join(str(c.parent) for c in candidates[:2])}); the peer arms need its PyTorch weights "
        f"(RUN/model): pass --torch-model PATH, or skip them"
    )


def torch_model_dir(run_id: str) -> Path:
    """RUN/model of a registered version's training run: the PyTorch weights, tokenizer and finetune_flow.json."""
    folder = run_folder(run_id) / "model"
    if not (folder / "config.json").exists():
        raise SystemExit(f"{folder} holds no PyTorch model (no config.json): pass --torch-model PATH, or skip the arm")
    return folder


def model_meta(model_dir: Path) -> dict:
    from tasks.io import read_json

    return read_json(Path(model_dir) / "finetune_flow.json")


def text_classifier(model_dir: Path, batch_size: int = 64):
    """The documented `transformers` pipeline on the fine-tuned folder: PyTorch on the CPU, all labels' scores."""
    from transformers import pipeline

    meta = model_meta(model_dir)
    if meta.get("task") != "classification":
        raise SystemExit(f"the peer arms compare text classifiers; {model_dir} is a {meta.get('task')} model")
    return pipeline(
        "text-classification",
        model=str(model_dir),
        tokenizer=str(model_dir),
        device=-1,
        batch_size=batch_size,
        truncation=True,
        max_length=int(meta["max_length"]),
        top_k=None,  # every label's probability, for the agreement check
    )


def as_answer(scored: list[dict], id2label: dict[str, str]) -> dict:
    """A pipeline result ([{label, score}, ...], most probable first) as {label, scores} like the inference core's."""
    scores = {id2label.get(s["label"], s["label"]): float(s["score"]) for s in scored}
    return {"label": max(scores, key=scores.__getitem__), "scores": scores}


def label_names(clf, model_dir: Path) -> dict[str, str]:
    """The pipeline's label names (the config's id2label) mapped to the model's own labels (finetune_flow.json)."""
    labels = model_meta(model_dir)["labels"]
    names = clf.model.config.id2label
    return {str(names[i]): labels[i] for i in range(len(labels))}


def classify(clf, texts: list[str], id2label: dict[str, str]) -> list[dict]:
    """Answers in input order; the texts go to the pipeline sorted by token count so batches pad little."""
    lengths = [
        len(ids)
        for ids in clf.tokenizer(texts, truncation=True, max_length=clf.tokenizer.model_max_length)["input_ids"]
    ]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    results = clf([texts[i] for i in order])
    answers: list[dict] = [{}] * len(texts)
    for i, scored in zip(order, results):
        answers[i] = as_answer(scored, id2label)
    return answers


def retemper(scores: dict[str, float], temperature: float) -> dict[str, float]:
    """softmax(log p / T) = softmax(logits / T): a plain softmax's probabilities under the bundle's temperature."""
    import math

    logs = {k: math.log(max(v, 1e-30)) / temperature for k, v in scores.items()}
    top = max(logs.values())
    exp = {k: math.exp(v - top) for k, v in logs.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def agreement(ours: list[dict], theirs: list[dict], temperature: float = 1.0) -> tuple[float, float, float]:
    """Share of equal labels; largest probability difference as they answer, and with `temperature` applied to theirs."""
    same = sum(a["label"] == b["label"] for a, b in zip(ours, theirs)) / max(len(ours), 1)
    raw = max((abs(a["scores"][k] - b["scores"][k]) for a, b in zip(ours, theirs) for k in a["scores"]), default=0.0)
    if temperature == 1.0:
        return same, raw, raw
    tempered = [retemper(b["scores"], temperature) for b in theirs]
    worst = max((abs(a["scores"][k] - b[k]) for a, b in zip(ours, tempered) for k in a["scores"]), default=0.0)
    return same, raw, worst


def fp32_check(model_dir: Path, texts: list[str], answers: list[dict], limit: int = 2000) -> tuple[float, float] | None:
    """The pipeline's answers against the run's fp32 ONNX export (RUN/onnx/model.onnx), on at most `limit` texts.

    (share of equal labels, largest probability difference once the model's temperature is applied to the
    pipeline's), or None when the run folder holds no fp32 export. It tells the pipeline's own differences
    apart from what int8 quantisation changes when the serving file is model.int8.onnx.
    """
    from tasks.inference.predictor import OnnxPredictor

    onnx_dir = Path(model_dir).parent / "onnx"
    if not (onnx_dir / "model.onnx").exists():
        return None
    predictor = OnnxPredictor(onnx_dir, model_file="model.onnx")
    texts, answers = texts[:limit], answers[:limit]
    ours = [a for i in range(0, len(texts), 64) for a in predictor.predict(texts[i : i + 64])]
    same, _, tempered = agreement(ours, answers, predictor.decision.temperature)
    return same, tempered
