"""Inference benchmark: PyTorch fp32, ONNX Runtime fp32 and ONNX Runtime int8, side by side in one run.

For one trained run (its `model/` PyTorch weights and its `onnx/` bundle) and its held-out test
split, on 1 and on 2 threads: latency at batch 1 (p50, p95; the model call alone, inputs
tokenised beforehand, the same inputs for every backend), throughput at batch 32 (examples/s),
and test accuracy and primary metric of each backend. Ratios are against PyTorch fp32 on the
same thread count. Goal: int8 >= 2x PyTorch at batch 1, losing <= 1 accuracy point.

    python bench/inference.py                       # newest run under ./runs that has onnx/ (make run)
    python bench/inference.py runs/quickstart-...   # a given run folder
    python bench/inference.py --iters 100 --batches 4   # a quicker look

Other processes on the machine slow every backend alike but add noise: the load average is
printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def newest_run(runs: Path) -> Path:
    """The newest run folder holding both a PyTorch model and an ONNX bundle."""
    found = sorted(
        (p for p in runs.glob("*") if (p / "onnx" / "model.onnx").exists() and (p / "model").is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        sys.exit(f"no run with model/ and onnx/ under {runs}; run `make run` first or pass a run folder")
    return found[-1]


def batches_of(tokenizer, texts: list[str], size: int, max_length: int) -> list[dict]:
    import numpy as np

    out = []
    for i in range(0, len(texts) - size + 1, size):
        enc = tokenizer(texts[i : i + size], truncation=True, max_length=max_length, padding=True, return_tensors="np")
        out.append({k: v.astype(np.int64) for k, v in enc.items()})
    return out


def time_calls(forward, batches: list[dict], warmup: int = 3) -> list[float]:
    """Seconds per call, after a few warm-up calls."""
    for b in batches[:warmup]:
        forward(b)
    times = []
    for b in batches:
        t = time.perf_counter()
        forward(b)
        times.append(time.perf_counter() - t)
    return times


def backends(run: Path, threads: int):
    """(name, forward) for each backend, set to `threads` intra-op threads."""
    import torch

    from tasks.inference.session import create_session
    from tasks.modelling.evaluate import load_trained
    from tasks.modelling.predict import torch_forward

    def onnx_forward(path: Path):
        sess = create_session(path, threads)
        names = [i.name for i in sess.get_inputs()]
        return lambda batch: sess.run(["logits"], {k: v for k, v in batch.items() if k in names})[0]

    torch.set_num_threads(threads)
    model, _, _ = load_trained(run / "model")
    yield "PyTorch fp32", torch_forward(model)
    yield "ORT fp32", onnx_forward(run / "onnx" / "model.onnx")
    if (run / "onnx" / "model.int8.onnx").exists():
        yield "ORT int8", onnx_forward(run / "onnx" / "model.int8.onnx")


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.io import read_frame, read_json
    from tasks.modelling.metrics import primary_metric
    from tasks.modelling.predict import score_frame

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", help="run folder (default: newest under ./runs with onnx/)")
    ap.add_argument("--iters", type=int, default=200, help="batch-1 calls timed per backend and thread count")
    ap.add_argument("--batches", type=int, default=8, help="batch-32 calls timed per backend and thread count")
    ap.add_argument("--threads", default="1,2", help="thread counts to compare, comma-separated")
    args = ap.parse_args(argv)

    run = Path(args.run) if args.run else newest_run(ROOT / "runs")
    meta = read_json(run / "onnx" / "finetune_flow.json")
    task, labels, max_length = meta["task"], meta["labels"], meta["max_length"]
    if task not in ("classification", "pair_classification"):
        sys.exit(f"this benchmark covers text classification; run {run} is {task}")
    test = read_frame(run / "data" / "clean" / "test.parquet")
    tokenizer = AutoTokenizer.from_pretrained(str(run / "onnx"))
    rng = np.random.default_rng(0)
    texts = list(test["text"].iloc[rng.permutation(len(test))])
    singles = batches_of(tokenizer, (texts * (args.iters // len(texts) + 1))[: args.iters], 1, max_length)
    bigs = batches_of(tokenizer, (texts * (32 * args.batches // len(texts) + 1))[: 32 * args.batches], 32, max_length)
    metric = primary_metric(task)
    load_before = os.getloadavg()[0]
    mean_tokens = np.mean([b["input_ids"].shape[1] for b in singles])
    print(
        f"run {run}\ntest split: {len(test)} rows; batch-1 inputs {mean_tokens:.0f} tokens on average; "
        f"max_length {max_length}; cores {os.cpu_count()}; load average {load_before:.1f}\n"
    )

    rows, quality = [], {}
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, forward in backends(run, threads):
            lat = np.array(time_calls(forward, singles)) * 1000
            per_batch = time_calls(forward, bigs, warmup=1)
            row = {
                "backend": name,
                "threads": threads,
                "p50": float(np.percentile(lat, 50)),
                "p95": float(np.percentile(lat, 95)),
                "tput": 32 * len(per_batch) / sum(per_batch),
            }
            if name not in quality:  # accuracy does not depend on the thread count: score once
                m = score_frame(forward, tokenizer, test, task, labels, max_length)["metrics"]
                quality[name] = (m["accuracy"], m[metric])
            row["accuracy"], row[metric] = quality[name]
            rows.append(row)
            print(f"  measured {name} on {threads} thread(s)", flush=True)

    print(
        f"\n{'backend':<14}{'threads':>8}{'b1 p50 ms':>11}{'b1 p95 ms':>11}{'b1 speed-up':>13}"
        f"{'b32 ex/s':>10}{'b32 ratio':>11}{'accuracy':>10}{'Δacc pts':>10}{metric:>8}"
    )
    for r in rows:
        base = next(b for b in rows if b["backend"] == "PyTorch fp32" and b["threads"] == r["threads"])
        print(
            f"{r['backend']:<14}{r['threads']:>8}{r['p50']:>11.2f}{r['p95']:>11.2f}{base['p50'] / r['p50']:>12.2f}x"
            f"{r['tput']:>10.1f}{r['tput'] / base['tput']:>10.2f}x{r['accuracy']:>10.4f}"
            f"{100 * (r['accuracy'] - base['accuracy']):>+10.2f}{r[metric]:>8.4f}"
        )
    int8 = [r for r in rows if r["backend"] == "ORT int8"]
    if int8:
        for r in int8:
            base = next(b for b in rows if b["backend"] == "PyTorch fp32" and b["threads"] == r["threads"])
            speed, loss = base["p50"] / r["p50"], 100 * (base["accuracy"] - r["accuracy"])
            verdict = "met" if speed >= 2 and loss <= 1 else "NOT met"
            print(
                f"\ngoal (int8 >= 2x PyTorch at batch 1, <= 1 point accuracy loss) on {r['threads']} thread(s): "
                f"{verdict} ({speed:.2f}x, {loss:+.2f} points lost)",
                end="",
            )
        print()
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other processes share the cores)")


if __name__ == "__main__":
    main()
