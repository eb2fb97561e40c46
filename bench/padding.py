"""Padding benchmark: our default (dynamic padding + length grouping) against the original recipe.

The original recipe (BERT's `run_glue.py`) pads every example to max_length 128 and samples
batches at random. Ours pads each batch to its own longest example and batches examples of
similar length together. Both train the same model (the offline MiniLM) on the same rows of
the packaged movie reviews, for the same steps with the same seed, through the real pipeline
(`train_model`, `evaluate_model`), one after the other in this one process. Printed: training
examples per second of both (timed over the optimizer steps only: no model loading,
evaluation or checkpointing), the ratio, and the test accuracy of both; a third run with
dynamic padding but random batches shows what each of the two changes does.

    python bench/padding.py     # 5 seeds, all rows, ~20 min on 2 idle CPU cores
    python bench/padding.py --rows 2000 --steps 40 --seeds 42   # a quick look

Short trainings differ by a point or so from batch order alone, so accuracy is compared on
the mean over seeds, on the whole test split (1,272 rows: a 400-row split alone moves accuracy
by ±2 points); each seed's variants run back to back, so they see the same machine load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tasks.results import CleanResult  # noqa: E402

# The first two are the comparison; the third separates what padding and grouping each do.
VARIANTS = {
    "default (dynamic padding + length grouping)": [],
    "original recipe (pad to max_length, random batches)": [
        "training.pad_to_max_length=true",
        "training.group_by_length=false",
    ],
    "dynamic padding, random batches": ["training.group_by_length=false"],
}


def make_step_timer():
    """A TrainerCallback timing the optimizer steps alone (first step begin to last step end)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.start = self.end = None
            self.steps = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()
            self.steps += 1

        def seconds(self) -> float:
            return self.end - self.start

    return StepTimer()


def build_config(args, run_dir: Path, extra: list[str]):
    from tasks.config import load_config

    rows = [f"data.max_rows={args.rows}"] if args.rows else []
    return load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            *rows,
            f"model.max_length={args.max_length}",
            f"training.max_steps={args.steps}",
            f"training.train_batch_size={args.batch}",
            f"training.seed={args.seed}",
            "training.logging_steps=1000",
            "export.enabled=false",
            f"run_dir={run_dir}",
            *extra,
        ],
    )


def prepare_data(cfg, folder: Path) -> CleanResult:
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data

    raw = collect_data(cfg.data, folder)
    return clean_data(raw.path, cfg.data, folder)


def mean_tokens(clean_ref: CleanResult, max_length: int) -> float:
    """Average real (unpadded) tokens per training example."""
    from tasks.io import read_frame
    from tasks.modelling.encode import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path("minilm"))
    texts = list(read_frame(clean_ref.splits["train"])["text"])
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return sum(lengths) / len(lengths)


def run_variant(args, clean_ref: CleanResult, folder: Path, extra: list[str]) -> dict:
    """Train and test one variant; return its speed and accuracy."""
    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.train import train_model

    cfg = build_config(args, folder, extra)
    timer = make_step_timer()
    trained = train_model(clean_ref, cfg, folder, callbacks=[timer])
    evaluation = evaluate_model(trained.model_dir, clean_ref, cfg, folder)
    examples = timer.steps * args.batch
    return {
        "steps": timer.steps,
        "train_seconds": timer.seconds(),
        "examples_per_s": examples / timer.seconds(),
        "test_accuracy": evaluation.metrics["test_accuracy"],
        "train_loss": trained.summary["train_loss"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of the packaged movie reviews (a stable sample); default all 12.8k, so the "
        "test split (1,272 rows) is large enough to compare accuracies",
    )
    p.add_argument("--steps", type=int, default=100, help="optimizer steps of each variant")
    p.add_argument("--batch", type=int, default=32, help="training batch size")
    p.add_argument("--max-length", type=int, default=128, help="the original recipe pads to this")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42, 43, 44, 45, 46],
        help="one pair of runs (both variants) per seed; accuracy is compared on the mean",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "padding.json"), help="JSON results file")
    args = p.parse_args(argv)

    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-padding-") as tmp:
        tmp = Path(tmp)
        args.seed = args.seeds[0]
        clean_ref = prepare_data(build_config(args, tmp, []), tmp / "data")
        tokens = mean_tokens(clean_ref, args.max_length)
        for seed in args.seeds:
            args.seed = seed
            for i, (name, extra) in enumerate(VARIANTS.items()):  # the pair back to back: same machine load
                runs[name].append({"seed": seed, **run_variant(args, clean_ref, tmp / f"s{seed}-v{i}", extra)})
    del args.seed

    summary = {
        name: {
            "examples_per_s": sum(r["examples_per_s"] for r in rs) / len(rs),
            "test_accuracy": sum(r["test_accuracy"] for r in rs) / len(rs),
        }
        for name, rs in runs.items()
    }
    (default_name, default), (original_name, original) = list(summary.items())[:2]
    ratios = [a["examples_per_s"] / b["examples_per_s"] for a, b in zip(runs[default_name], runs[original_name])]
    gap = (default["test_accuracy"] - original["test_accuracy"]) * 100
    print(
        f"\npadding benchmark: MiniLM, rotten_tomatoes ({args.rows or 'all'} rows, "
        f"{clean_ref.report['rows_out']['train']} train, {clean_ref.report['rows_out']['test']} test), "
        f"{args.steps} steps x batch {args.batch}, seeds {args.seeds}, torch threads {_threads()}"
    )
    print(f"mean tokens per training example: {tokens:.1f} (the original recipe pads each to {args.max_length})\n")
    print(f"{'variant':<52} {'seed':>5} {'examples/s':>10} {'train s':>8} {'test acc':>9}")
    for name, rs in runs.items():
        for r in rs:
            print(
                f"{name:<52} {r['seed']:>5} {r['examples_per_s']:>10.1f} {r['train_seconds']:>8.1f} "
                f"{r['test_accuracy']:>9.4f}"
            )
        print(
            f"{name:<52} {'mean':>5} {summary[name]['examples_per_s']:>10.1f} {'':>8} "
            f"{summary[name]['test_accuracy']:>9.4f}"
        )
    print(
        f"\nspeed-up per seed: {', '.join(f'{r:.2f}x' for r in ratios)}; median {sorted(ratios)[len(ratios) // 2]:.2f}x"
    )
    diffs = [(a["test_accuracy"] - b["test_accuracy"]) * 100 for a, b in zip(runs[default_name], runs[original_name])]
    spread = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    print(f"test accuracy difference per seed (default - original): {', '.join(f'{d:+.2f}' for d in diffs)} points")
    print(f"mean test accuracy difference: {gap:+.2f} points (standard error over seeds {spread:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "mean_tokens": tokens,
                "runs": runs,
                "summary": summary,
                "speedups": ratios,
                "accuracy_diff_points": gap,
                "accuracy_diff_per_seed": diffs,
                "accuracy_diff_standard_error": spread,
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
