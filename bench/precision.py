"""Precision benchmark: bf16 autocast against fp32 training on this CPU (or GPU), side by side.

Both train the offline MiniLM on the same rows of the packaged movie reviews, for the same
steps with the same seeds and fused AdamW, through the real pipeline (`train_model`,
`evaluate_model`), one after the other in this one process; each seed's pair runs back to
back (the order alternating between seeds), so both see the same machine load. Printed:
training examples per second of both (timed over the optimizer steps only), the ratio, and
the test accuracy of both (the fp32 weights that bf16 training keeps, scored in fp32).

    python bench/precision.py      # 5 seeds, all rows, 200 steps: ~15 min on 2 idle CPU cores
    python bench/precision.py --rows 2000 --steps 20 --seeds 42   # a quick look

Goal (issue 15): bf16 at least 1.4x faster, mean test accuracy within 0.5 points of fp32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.padding import ROOT, _threads, build_config, mean_tokens, prepare_data, run_variant

VARIANTS = {"fp32": ["training.mixed_precision=fp32"], "bf16": ["training.mixed_precision=bf16"]}
GOAL_SPEEDUP, GOAL_ACCURACY_POINTS = 1.4, 0.5


def device_note() -> str:
    """Where the training runs and whether it runs bf16 natively there."""
    import torch

    from tasks.modelling.precision import cpu_runs_bf16_natively

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    native = "native bf16 (AMX-BF16/AVX512-BF16)" if cpu_runs_bf16_natively() else "NO native bf16: emulated"
    return f"CPU, {native}, torch threads {_threads()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="rows of the packaged movie reviews; default all 12.8k, so the test split (1,272 rows) "
        "is large enough to compare accuracies to half a point",
    )
    p.add_argument("--steps", type=int, default=200, help="optimizer steps of each run")
    p.add_argument("--batch", type=int, default=32, help="training batch size")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example at most (the quickstart's 64)")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[42, 43, 44, 45, 46],
        help="one fp32 and one bf16 run per seed; accuracy is compared on the mean",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "precision.json"), help="JSON results file")
    args = p.parse_args(argv)
    from tasks.quiet import silence_known_noise

    silence_known_noise(torch_stage=True)

    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        tmp = Path(tmp)
        args.seed = args.seeds[0]
        clean_ref = prepare_data(build_config(args, tmp, []), tmp / "data")
        tokens = mean_tokens(clean_ref, args.max_length)
        for i, seed in enumerate(args.seeds):
            args.seed = seed
            order = list(VARIANTS.items())[:: -1 if i % 2 else 1]  # alternate who goes first: no drift favours one
            for name, extra in order:
                runs[name].append({"seed": seed, **run_variant(args, clean_ref, tmp / f"s{seed}-{name}", extra)})
    del args.seed

    fp32, bf16 = runs["fp32"], runs["bf16"]
    ratios = [b["examples_per_s"] / f["examples_per_s"] for f, b in zip(fp32, bf16)]
    diffs = [(b["test_accuracy"] - f["test_accuracy"]) * 100 for f, b in zip(fp32, bf16)]
    mean = {
        name: {key: statistics.fmean(r[key] for r in rs) for key in ("examples_per_s", "test_accuracy")}
        for name, rs in runs.items()
    }
    speedup = mean["bf16"]["examples_per_s"] / mean["fp32"]["examples_per_s"]
    gap = (mean["bf16"]["test_accuracy"] - mean["fp32"]["test_accuracy"]) * 100
    spread = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")

    print(
        f"\nprecision benchmark: MiniLM, rotten_tomatoes ({args.rows or 'all'} rows, "
        f"{clean_ref.report['rows_out']['train']} train, {clean_ref.report['rows_out']['test']} test), "
        f"{args.steps} steps x batch {args.batch}, max_length {args.max_length} "
        f"(mean {tokens:.1f} tokens), fused AdamW, seeds {args.seeds}"
    )
    print(f"device: {device_note()}\n")
    print(
        f"{'seed':>5} {'fp32 ex/s':>10} {'bf16 ex/s':>10} {'ratio':>6} {'fp32 acc':>9} {'bf16 acc':>9} {'diff pt':>8}"
    )
    for f, b, ratio, diff in zip(fp32, bf16, ratios, diffs):
        print(
            f"{f['seed']:>5} {f['examples_per_s']:>10.1f} {b['examples_per_s']:>10.1f} {ratio:>5.2f}x "
            f"{f['test_accuracy']:>9.4f} {b['test_accuracy']:>9.4f} {diff:>+8.2f}"
        )
    print(
        f"{'mean':>5} {mean['fp32']['examples_per_s']:>10.1f} {mean['bf16']['examples_per_s']:>10.1f} "
        f"{speedup:>5.2f}x {mean['fp32']['test_accuracy']:>9.4f} {mean['bf16']['test_accuracy']:>9.4f} "
        f"{gap:>+8.2f}"
    )
    met = speedup >= GOAL_SPEEDUP and abs(gap) <= GOAL_ACCURACY_POINTS
    print(
        f"\nbf16 vs fp32: {speedup:.2f}x examples/s (per seed {', '.join(f'{r:.2f}x' for r in ratios)}); "
        f"mean test accuracy {gap:+.2f} points (standard error over seeds {spread:.2f})"
    )
    print(f"goal (>= {GOAL_SPEEDUP}x, accuracy within {GOAL_ACCURACY_POINTS} points): {'met' if met else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "device": device_note(),
                "mean_tokens": tokens,
                "runs": runs,
                "mean": mean,
                "speedup": speedup,
                "speedups": ratios,
                "accuracy_diff_points": gap,
                "accuracy_diff_per_seed": diffs,
                "accuracy_diff_standard_error": spread,
                "goal_met": met,
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
