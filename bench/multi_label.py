"""What multi-label costs against single-label on the same texts: training time and memory, scoring speed.

The packaged WNUT-2016 tweets twice: as `multi_label` (the set of entity types each mentions) and as
`classification` (whether it mentions any: "entity" / "none"), same rows, splits, model, max_length, batch
size and number of optimizer updates. Each arm trains in a process of its own (peak RSS is the process's),
exports its ONNX bundle, and the two bundles then score the same texts in alternating rounds in one process.
Ratios are multi-label / single-label; the goal (issue 19) is within 10%.

    .venv/bin/python bench/multi_label.py [--steps 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = {
    "multi_label": [],
    # Same texts, one label each: does the tweet mention any entity type.
    "classification": ["data.task=classification"],
}


def overrides(arm: str, steps: int, folder: Path) -> list[str]:
    return [
        *ARMS[arm],
        f"training.max_steps={steps}",
        "training.min_updates=0",
        "training.eval_steps=1000000",  # no evaluation inside the timed loop
        "training.early_stopping_patience=null",
        "data.validation.min_class_rows=2",
        "model.max_length=64",
        f"run_dir={folder}",
    ]


def train_arm(arm: str, steps: int, folder: str) -> None:
    """Child process: clean, train `steps` updates, export; print one JSON line with the figures."""
    import pandas as pd

    from tasks.config import load_config
    from tasks.modelling.export import export_model
    from tasks.modelling.train import train_model
    from tests.support import prepare

    cfg = load_config(ROOT / "configs" / "tweet_entity_types.yaml", overrides(arm, steps, Path(folder)))
    if arm == "classification":  # the same rows' labels as one class each
        import tasks.data.sources as sources

        read = sources._read_tweet_entity_types
        sources._read_tweet_entity_types = lambda: read().assign(
            label=lambda d: ["entity" if names else "none" for names in d["label"]]
        )
    clean = prepare(cfg, Path(folder))
    started = time.perf_counter()
    trained = train_model(clean, cfg, Path(folder))
    seconds = time.perf_counter() - started
    exported = export_model(trained.model_dir, clean, cfg, Path(folder))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runtime = json.loads((Path(folder) / "train_summary.json").read_text()).get("train_runtime_s", seconds)
    texts = pd.read_parquet(clean.splits["train"])["text"].tolist()
    print(
        json.dumps(
            {
                "arm": arm,
                "train_seconds": runtime,
                "peak_rss_mb": peak_mb,
                "bundle": exported.dir,
                "texts": texts[:1000],
            }
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        train_arm(args.arm, args.steps, args.folder)
        return 0

    from bench.peers import cpu_line
    from tasks.inference.predictor import OnnxPredictor

    print(cpu_line())
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-multi-label-") as tmp:
        for arm in ARMS:
            out = subprocess.run(
                [sys.executable, __file__, "--arm", arm, "--steps", str(args.steps), "--folder", f"{tmp}/{arm}"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            results[arm] = json.loads(out.stdout.strip().splitlines()[-1])
        texts = results["multi_label"]["texts"]
        # The fp32 file for both: each arm's int8 gate may decide differently, and int8 is faster.
        predictors = {arm: OnnxPredictor(r["bundle"], model_file="model.onnx") for arm, r in results.items()}
        for p in predictors.values():
            p.predict(texts[:64])  # warm-up
        scoring = {arm: [] for arm in ARMS}
        for _ in range(args.rounds):  # alternating rounds: drift on a shared machine hits both arms alike
            for arm, p in predictors.items():
                t = time.perf_counter()
                for i in range(0, len(texts), 64):
                    p.predict(texts[i : i + 64])
                scoring[arm].append(len(texts) / (time.perf_counter() - t))
    m, s = results["multi_label"], results["classification"]
    best = {arm: max(v) for arm, v in scoring.items()}
    print(f"{args.steps} optimizer updates, batch 32, max_length 64; scoring {len(texts)} texts x {args.rounds} rounds")
    print(f"{'':24}{'multi_label':>14}{'classification':>16}{'ratio':>8}")
    print(
        f"{'train seconds':24}{m['train_seconds']:>14.1f}{s['train_seconds']:>16.1f}{m['train_seconds'] / s['train_seconds']:>8.3f}"
    )
    print(
        f"{'peak RSS (MB)':24}{m['peak_rss_mb']:>14.0f}{s['peak_rss_mb']:>16.0f}{m['peak_rss_mb'] / s['peak_rss_mb']:>8.3f}"
    )
    ratio = best["multi_label"] / best["classification"]
    print(f"{'scoring texts/s (best)':24}{best['multi_label']:>14.0f}{best['classification']:>16.0f}{ratio:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
