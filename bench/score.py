"""Batch scoring benchmark: `ftflow score` on a local Dask cluster against the batch-1 path, in one run.

N short texts from the packaged datasets (movie reviews, SMS, rated snippets, tweets; cycled to N)
are scored twice with the same registered model:

- `ftflow score MODEL --input texts.parquet --output ...` as a whole fresh process (its Prefect
  start-up, the Dask cluster, every shard, the output file), timed from outside;
- the same texts one at a time through the inference core (`OnnxPredictor.predict([text])`, the
  service's batch-1 path), in this process, on 1 thread (the service's default) and on every core;
  the faster of the two is the reference;
- what a user would run instead (bench/peers.py): a `transformers` text-classification pipeline on
  the same fine-tuned model's PyTorch weights (the registered version's run folder, RUN/model), on
  the CPU, batch 64, the texts sorted by length, truncated at the model's max_length. It applies no
  calibration and no threshold (a binary model's threshold can change labels; a temperature cannot).

It prints texts/s of every arm and the ratios, how often their labels agree and the largest
difference between their probabilities (a text's answer must not depend on how it was batched).
Goal: `ftflow score` >= 4x the batch-1 path and >= 800 texts/s on 2 cores.

    python bench/score.py                                  # 100,000 texts, quickstart-sentiment@challenger
    python bench/score.py --texts 5000                     # a short look
    python bench/score.py --model NAME@ALIAS --workers 2 --batch-size 16
    python bench/score.py --texts 5000 --pipeline-texts 1000   # the pipeline arm on the first 1,000 texts
    python bench/score.py --no-pipeline                    # without the pipeline arm

The model must be in the registry that MLFLOW_TRACKING_URI (or FTFLOW_MLRUNS) points at: `make run`
registers the quickstart model. Run it on an idle machine: other work slows both arms, unevenly.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def packaged_texts(n: int, seed: int = 0) -> list[str]:
    """n short texts from every packaged dataset, shuffled, cycled when n exceeds what they hold."""
    import random

    from tasks.config import SourceConfig
    from tasks.data.sources import PACKAGED, read_source

    texts: list[str] = []
    for name in PACKAGED:
        df = read_source(SourceConfig(kind="package", name=name))
        texts += [" ".join(t) for t in df["tokens"]] if "tokens" in df.columns else [str(t) for t in df["text"]]
    texts = [t for t in texts if t.strip()]
    random.Random(seed).shuffle(texts)
    return [texts[i % len(texts)] for i in range(n)]


def children_cpu() -> float:
    """CPU seconds of every finished child process and its descendants (Dask workers, Prefect server)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_ftflow_score(model: str, data: Path, out: Path, workers: int | None, batch_size: int | None) -> dict:
    """`ftflow score` as a fresh process: wall and CPU time, the speed it reports for the Dask part, its MLflow run."""
    cmd = [sys.executable, "-m", "flows.ops.cli", "score", model, "--input", str(data), "--output", str(out)]
    if workers:
        cmd += ["--workers", str(workers)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        sys.exit(f"ftflow score failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    m = re.search(r"speed:\s+(\d+) texts/s \(([\d.]+) s on Dask\)", proc.stdout)
    run = re.search(r"MLflow run: (\S+)", proc.stdout)
    return {
        "wall": wall,
        "cpu": cpu,
        "dask_seconds": float(m.group(2)) if m else float("nan"),
        "run_id": run.group(1) if run else None,
    }


def batch1(bundle: Path, texts: list[str], threads: int) -> tuple[float, float, list[dict]]:
    """Wall and CPU seconds to answer the texts one request at a time, and the answers."""
    from tasks.inference.predictor import OnnxPredictor

    predictor = OnnxPredictor(bundle, threads=threads)
    for t in texts[:20]:  # warm-up
        predictor.predict([t])
    cpu, start = time.process_time(), time.perf_counter()
    answers = [predictor.predict([t])[0] for t in texts]
    return time.perf_counter() - start, time.process_time() - cpu, answers


def pipeline_arm(model_dir: Path, texts: list[str], batch_size: int) -> tuple[float, float, list[dict]]:
    """Wall and CPU seconds of the transformers pipeline over the texts (sorting included), and its answers."""
    from bench.peers import classify, label_names, text_classifier

    clf = text_classifier(model_dir, batch_size)
    id2label = label_names(clf, model_dir)
    classify(clf, texts[: 2 * batch_size], id2label)  # warm-up
    cpu, start = time.process_time(), time.perf_counter()
    answers = classify(clf, texts, id2label)
    return time.perf_counter() - start, time.process_time() - cpu, answers


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="quickstart-sentiment@challenger", help="NAME, NAME@ALIAS or NAME/VERSION")
    p.add_argument("--texts", type=int, default=100_000, help="how many texts (default 100,000)")
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--batch-size", type=int, default=None, help="ftflow score --batch-size (default: its own, 64)")
    p.add_argument(
        "--pipeline-texts",
        type=int,
        default=None,
        help="texts for the transformers pipeline arm: the first N of the same texts (default: all)",
    )
    p.add_argument("--pipeline-batch-size", type=int, default=64, help="the pipeline's batch_size (default 64)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the transformers pipeline arm")
    p.add_argument(
        "--torch-model",
        type=Path,
        default=None,
        help="the fine-tuned PyTorch model folder for the pipeline arm (default: RUN/model of the version's run)",
    )
    args = p.parse_args(argv)

    import pandas as pd

    from bench.peers import cpu_line, load_line, torch_model_dir
    from tasks.score import fetch_bundle, resolve_model

    model = resolve_model(args.model)
    bundle = fetch_bundle(model)
    torch_dir = None if args.no_pipeline else (args.torch_model or torch_model_dir(model.run_id))
    texts = packaged_texts(args.texts)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ftflow-bench-score-") as tmp:
        data, out = Path(tmp) / "texts.parquet", Path(tmp) / "scored.parquet"
        pd.DataFrame({"text": texts}).to_parquet(data, index=False)
        load_before = os.getloadavg()[0]
        batch = run_ftflow_score(args.model, data, out, args.workers, args.batch_size)
        scored = pd.read_parquet(out, columns=["prediction", "probabilities"])
        singles = {n: batch1(bundle, texts, n) for n in sorted({1, cores})}
        peer_texts = texts[: args.pipeline_texts or len(texts)]
        peer = pipeline_arm(torch_dir, peer_texts, args.pipeline_batch_size) if torch_dir else None
        load_after = os.getloadavg()[0]

    threads, (single_s, _, single_answers) = min(singles.items(), key=lambda kv: kv[1][0])
    batch_rate, single_rate = len(texts) / batch["wall"], len(texts) / single_s
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(
        f"\n{model.label}: {bundle / read_serving(bundle)}; {len(texts):,} texts, {words:.1f} words on average; "
        f"{cores} cores; load average {load_before:.1f} before, {load_after:.1f} after"
    )
    # CPU ms per text hardly depends on what else runs; cores / CPU per text is what an idle machine
    # would reach if every core were busy (a projection, printed beside the measured wall figures).
    print(f"{'arm':<46} {'seconds':>8} {'texts/s':>8} {'CPU ms/text':>12} {'idle projection texts/s':>24}")
    # The projection needs the arm to keep its cores busy: the Dask workers do, one batch-1 thread
    # does on its one core; batch-1 on several threads does not (its threads wait on each other).
    rows = [("ftflow score (whole process, local Dask)", batch["wall"], batch["cpu"], cores)]
    rows += [(f"batch-1 path, {n} thread(s)", s, c, 1 if n == 1 else None) for n, (s, c, _) in singles.items()]
    for name, wall, cpu, used in rows:
        projection = f"{used * len(texts) / cpu:.0f}" if used else "-"
        print(f"{name:<46} {wall:>8.1f} {len(texts) / wall:>8.0f} {1000 * cpu / len(texts):>12.2f} {projection:>24}")
    print(
        f"{'  Dask part of ftflow score (cluster + shards)':<46} {batch['dask_seconds']:>8.1f} "
        f"{len(texts) / batch['dask_seconds']:>8.0f}"
    )
    agree = sum(a.get("label") == b for a, b in zip(single_answers, scored["prediction"])) / len(texts)
    worst = max(abs(a["scores"][k] - b[k]) for a, b in zip(single_answers, scored["probabilities"]) for k in b)
    print(
        f"\nratio (ftflow score / fastest batch-1, {threads} thread(s)), wall: {batch_rate / single_rate:.2f}x "
        f"(goal >= 4x); ftflow score {batch_rate:.0f} texts/s (goal >= 800 on 2 cores); "
        f"labels agree on {agree:.2%} of texts, largest probability difference {worst:.1e}"
    )
    if peer is not None:
        print_pipeline_arm(peer, peer_texts, batch_rate, scored, bundle, torch_dir, args.pipeline_batch_size)
    print(f"CPU: {cpu_line()}; {load_line()} at the end")


def print_pipeline_arm(peer, texts, batch_rate, scored, bundle, torch_dir, batch_size) -> None:
    """The pipeline arm's row, its ratio to ftflow score and how far its answers agree with ftflow score's."""
    from bench.peers import agreement, fp32_check
    from tasks.io import read_json

    wall, cpu, answers = peer
    n = len(texts)
    rate = n / wall
    decision = read_json(bundle / "finetune_flow.json").get("decision") or {}
    temperature = float(decision.get("temperature", 1.0))
    ours = [
        {"label": label, "scores": dict(probs)}
        for label, probs in zip(scored["prediction"][:n], scored["probabilities"][:n])
    ]
    same, raw, tempered = agreement(ours, answers, temperature)
    print(f"\nwhat a user would run instead: transformers pipeline (PyTorch, CPU) on {torch_dir}")
    print(f"{'arm':<46} {'seconds':>8} {'texts/s':>8} {'CPU ms/text':>12}")
    print(
        f"{f'transformers pipeline, batch {batch_size}, sorted':<46} {wall:>8.1f} {rate:>8.0f} "
        f"{1000 * cpu / n:>12.2f}   ({n:,} texts, torch {torch_threads()} thread(s))"
    )
    check = fp32_check(torch_dir, texts, answers)
    if check is not None:
        print(
            f"  cross-check, pipeline against the run's fp32 ONNX export (onnx/model.onnx, first {min(n, 2000):,} "
            f"texts, batches of 64): labels equal on {check[0]:.2%}, largest probability difference {check[1]:.1e} "
            f"with the temperature applied"
        )
    threshold = decision.get("threshold")
    print(
        f"ratio (ftflow score / pipeline), wall: {batch_rate / rate:.2f}x; labels equal to ftflow score's on "
        f"{same:.2%} of texts; largest probability difference {raw:.1e} as answered"
        + (
            f", {tempered:.1e} with the bundle's temperature {temperature:.3g} applied to the pipeline's"
            if temperature != 1.0
            else ""
        )
    )
    print(
        "  the pipeline applies no calibration and no threshold (plain softmax, most probable label)"
        + (
            f"; this bundle decides with threshold {threshold} on '{decision.get('positive_label')}'"
            if threshold is not None
            else "; this bundle sets no threshold"
        )
        + f"; ftflow serves {read_json(bundle / 'finetune_flow.json').get('serving_file', 'model.onnx')}, the pipeline the fp32 PyTorch weights"
    )


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def read_serving(bundle: Path) -> str:
    from tasks.io import read_json

    return read_json(bundle / "finetune_flow.json").get("serving_file", "model.onnx")


if __name__ == "__main__":
    main()
