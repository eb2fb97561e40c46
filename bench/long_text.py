"""Long documents: truncate (read the first max_length tokens) against chunk (read every window, aggregate).

Both train the offline MiniLM on the same clean splits of the packaged convention speeches
(configs/speeches.yaml: 189 speeches, democrat / republican, ~870 tokens each) with the same
seed and settings, through the real stages (`train_model`, then the test split scored by
`score_frame`, the scorer of `evaluate_model`), one after the other in this one process.
The chunked model is scored twice: windows' logits averaged (its configured `mean`) and their
maximum (`max`, no retraining: aggregation happens after the model). Printed per variant: test
accuracy (with its 95% bootstrap interval), F1 of the republican class, MCC, training windows,
training and scoring wall time.

    python bench/long_text.py     # max_length 128, stride 32, 3 epochs: 25 min on 2 cores shared at load ~10
    python bench/long_text.py --epochs 1 --max-length 64   # a quick look
    python bench/long_text.py --only truncate --epochs 12  # truncation given about chunk's optimizer steps

The test split holds ~47 speeches: one speech moves accuracy by ~2 points, so read the
interval before the difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def score_test(model_dir: str, clean: dict, cfg, long_text) -> tuple[dict, float]:
    """Test metrics (with the bootstrap interval) of a trained model read `long_text`'s way, and the wall time."""
    from tasks.io import read_frame
    from tasks.modelling.confidence import interval_metrics
    from tasks.modelling.evaluate import load_trained
    from tasks.modelling.predict import score_frame, torch_forward

    model, tokenizer, _ = load_trained(model_dir)
    test = read_frame(clean.splits["test"])
    start = time.perf_counter()
    scored = score_frame(
        torch_forward(model),
        tokenizer,
        test,
        cfg.data.task,
        clean.labels,
        cfg.model.max_length,
        cfg.training.eval_batch_size,
        long_text=long_text,
    )
    seconds = time.perf_counter() - start
    return {**scored["metrics"], **interval_metrics(cfg.data.task, scored, clean.labels), "docs": len(test)}, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "speeches.yaml"))
    parser.add_argument("--max-length", type=int, default=None, help="model.max_length (default: the config's)")
    parser.add_argument("--stride", type=int, default=None, help="model.stride (default: the config's)")
    parser.add_argument("--epochs", type=float, default=None, help="training.epochs (default: the config's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--only",
        choices=["truncate", "chunk"],
        default=None,
        help="run one reading only (e.g. truncate with more epochs, to match chunk's steps)",
    )
    args = parser.parse_args()

    from tasks.config import load_config
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data
    from tasks.inference.windows import LongText, long_text_of
    from tasks.modelling.train import train_model

    sets = [f"training.seed={args.seed}", "training.save_total_limit=1"]
    sets += [f"model.max_length={args.max_length}"] if args.max_length else []
    sets += [f"model.stride={args.stride}"] if args.stride is not None else []
    sets += [f"training.epochs={args.epochs}"] if args.epochs else []
    tmp = Path(tempfile.mkdtemp(prefix="bench-long-text-"))
    chunk_cfg = load_config(args.config, [*sets, "model.long_text=chunk"])
    variants = {"truncate": load_config(args.config, [*sets, "model.long_text=truncate"]), "chunk": chunk_cfg}
    variants = {k: v for k, v in variants.items() if args.only in (None, k)}
    raw = collect_data(chunk_cfg.data, tmp / "data")
    clean = clean_data(raw.path, chunk_cfg.data, tmp / "data")
    print(
        f"speeches: {clean.report['rows_out']} (train/validation/test), quarantined "
        f"{clean.report['quarantined']}; max_length {chunk_cfg.model.max_length}, stride "
        f"{chunk_cfg.model.window_stride()}, epochs {chunk_cfg.training.epochs}, seed {args.seed}\n"
    )
    rows = []
    for name, cfg in variants.items():
        start = time.perf_counter()
        trained = train_model(clean, cfg, tmp / name)
        train_s = time.perf_counter() - start
        how = long_text_of(cfg.model)
        readings = [(name if name == "truncate" else f"chunk, {how.aggregate}", how)]
        if how.chunks:
            readings.append(("chunk, max (same model)", LongText("chunk", how.stride, "max")))
        for label, reading in readings:
            metrics, score_s = score_test(trained.model_dir, clean, cfg, reading)
            rows.append(
                (label, metrics, trained.summary["global_step"] * cfg.training.train_batch_size, train_s, score_s)
            )
    print(
        f"{'reading':26} {'accuracy [95% CI]':>24} {'F1 rep.':>8} {'MCC':>6} {'windows seen':>12} "
        f"{'train s':>8} {'score s':>8}"
    )
    for label, m, seen, train_s, score_s in rows:
        ci = f"{m['accuracy']:.3f} [{m['accuracy_ci_low']:.3f}, {m['accuracy_ci_high']:.3f}]"
        print(f"{label:26} {ci:>24} {m['f1']:>8.3f} {m['mcc']:>6.3f} {seen:>12} {train_s:>8.0f} {score_s:>8.1f}")
    print(f"\n{rows[0][1]['docs']} test speeches; 'windows seen' = optimizer steps x batch size; run folders in {tmp}")


if __name__ == "__main__":
    main()
