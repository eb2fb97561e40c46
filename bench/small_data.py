"""Small data: the defaults before issue 23 against the defaults that fit the data, side by side.

The packaged TREC/UIUC coarse questions (6 classes) go through the real collect and clean stages;
then the train split is cut to K rows per class and validation to K // 4 (at least 2) per class,
while the test split stays whole (~540 rows), so every variant is scored on the same rows. Each
variant trains the offline MiniLM through `train_model` and is scored by `evaluate_model`, in this one
process, one after the other. The config sets no training values, so both variants run on the
defaults (lr 5e-5, batch 32, 3 epochs); they differ only in:

    old: model.max_length=128, training.min_updates=0 (the defaults before issue 23)
    new: the defaults now (max_length auto, min_updates 300, max_epochs_auto 50, evaluations_auto 10)

Printed per variant: test accuracy and macro-F1, optimizer updates, evaluations, the max_length used,
and training + evaluation wall time.

    python bench/small_data.py                 # K = 16 and 64: ~10 min on 2 shared cores
    python bench/small_data.py --rows 8 16 64 256
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {
    "old": ["model.max_length=128", "training.min_updates=0"],
    "new": [],
}


def base_overrides(run_dir: Path) -> list[str]:
    return [
        "data.source.kind=package",
        "data.source.name=trec_coarse",
        "data.task=classification",
        "data.labels=[ABBR, DESC, ENTY, HUM, LOC, NUM]",
        "model.name=minilm",
        "training.metric_for_best_model=f1_macro",
        f"run_dir={run_dir}",
    ]


def cut(clean, rows_per_class: int, folder: Path, seed: int = 0):
    """The clean splits with train cut to K rows per class and validation to K // 4 (>= 2); test whole."""
    from tasks.io import read_frame, write_parquet

    folder.mkdir(parents=True, exist_ok=True)
    splits = dict(clean.splits)
    for split, k in (("train", rows_per_class), ("validation", max(rows_per_class // 4, 2))):
        df = read_frame(clean.splits[split])
        small = df.sample(frac=1, random_state=seed).groupby("label").head(k)
        splits[split] = str(folder / f"{split}.parquet")
        write_parquet(small.reset_index(drop=True), splits[split])
    digest = hashlib.sha256("".join(Path(p).read_bytes().hex()[:4096] for p in splits.values()).encode()).hexdigest()
    return dataclasses.replace(clean, splits=splits, digest=f"{clean.digest}-k{rows_per_class}-{digest[:8]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[16, 64], help="train rows per class")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()

    from tasks.config import load_config
    from tasks.io import read_frame
    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.train import train_model
    from tasks.quiet import silence_known_noise
    from tests.support import prepare

    silence_known_noise(torch_stage=True)
    tmp = Path(tempfile.mkdtemp(prefix="small-data-"))
    clean = prepare(load_config(None, base_overrides(tmp / "runs")), tmp / "prep")
    rows = []
    for k in args.rows:
        small = cut(clean, k, tmp / f"k{k}")
        n_train, n_test = len(read_frame(small.splits["train"])), len(read_frame(small.splits["test"]))
        for name in args.variants:
            cfg = load_config(None, base_overrides(tmp / "runs") + VARIANTS[name])
            folder = tmp / f"k{k}-{name}"
            start = time.perf_counter()
            summary = train_model(small, cfg, folder).summary
            trained = time.perf_counter() - start
            metrics = evaluate_model(folder / "model", small, cfg, folder, "bench").metrics
            took = time.perf_counter() - start
            resolved = summary["resolved_defaults"]
            history = json.loads((folder / "train_summary.json").read_text())["log_history"]
            evals = sum(1 for h in history if "eval_loss" in h)
            rows.append(
                f"| {k} ({n_train}) | {name} | {metrics['test_accuracy']:.3f} | {metrics['test_f1_macro']:.3f} | "
                f"{summary['global_step']} | {evals} | {resolved['max_length']['max_length']} | {trained:.0f} | "
                f"{took:.0f} |"
            )
            print(rows[-1], flush=True)
    print(
        f"\nTREC coarse, test split {n_test} rows; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n"
        "| train rows per class (total) | defaults | test accuracy | test macro-F1 | updates | evaluations "
        "| max_length | train s | train + evaluate s |\n|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
