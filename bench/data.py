"""Time the data stage (collect → clean → validate) on N synthetic review rows.

    .venv/bin/python bench/data.py [--rows 1000000] [--keep]

The rows recombine real snippets of the packaged rotten_tomatoes data (the first half
of one snippet joined to the second half of another, labelled by the first) and add
the dirt a real export has: duplicates, empty texts, control characters and odd
whitespace, labels outside the declared set, missing labels, conflicting labels and a
few over-long texts. They go to one CSV, read like any user's file.

Each step runs in a fresh child process so that its peak resident memory (ru_maxrss,
imports included) is its own; time is measured around the step's call, and the
library imports of each child are shown apart. Goal (issue 3): the whole stage on
1M rows under 60 s on 2 cores and under 4 GB peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = ("collect", "clean", "validate")
LABELS = ["negative", "positive"]
# Shares of the rows that get each kind of dirt (the rest are clean recombinations).
DIRT = {
    "duplicate": 0.03,
    "conflict": 0.005,
    "empty": 0.005,
    "messy_chars": 0.01,
    "unknown_label": 0.002,
    "missing_label": 0.001,
}
OVERLONG_ROWS = 20


# --- the data --------------------------------------------------------------------------------------


def load_snippets():
    """The packaged movie-review snippets and their labels (positive/negative)."""
    from tasks.config import SourceConfig
    from tasks.data.sources import read_source

    df = read_source(SourceConfig(kind="package", name="rotten_tomatoes"))
    return df["text"].astype(str).to_numpy(dtype=object), df["label"].to_numpy(dtype=object)


def split_halves(texts):
    """Each snippet's first and second half of words, for recombination."""
    heads, tails = [], []
    for t in texts:
        words = t.split()
        mid = max(1, len(words) // 2)
        heads.append(" ".join(words[:mid]))
        tails.append(" ".join(words[mid:]))
    return heads, tails


def make_rows(n: int, seed: int = 0):
    """A frame of n (review, verdict) rows with realistic dirt; see DIRT for the shares."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    texts, labels = load_snippets()
    heads, tails = (pd.Series(h, dtype=object) for h in split_halves(texts))
    a, b = rng.integers(0, len(texts), n), rng.integers(0, len(texts), n)
    review = (heads.iloc[a].reset_index(drop=True) + " " + tails.iloc[b].reset_index(drop=True)).str.strip()
    verdict = pd.Series(labels[a], dtype=object)

    picks = rng.permutation(n)
    cursor = 0

    def take(share: float):
        nonlocal cursor
        k = int(n * share)
        chosen = picks[cursor : cursor + k]
        cursor += k
        return chosen

    dup = take(DIRT["duplicate"])
    src = rng.integers(0, n, len(dup))
    review.iloc[dup], verdict.iloc[dup] = review.iloc[src].to_numpy(), verdict.iloc[src].to_numpy()
    conflict = take(DIRT["conflict"])
    src = rng.integers(0, n, len(conflict))
    review.iloc[conflict] = review.iloc[src].to_numpy()
    verdict.iloc[conflict] = np.where(verdict.iloc[src].to_numpy() == "positive", "negative", "positive")
    review.iloc[take(DIRT["empty"])] = rng.choice(["", " ", "\t \n", "\u200b"], int(n * DIRT["empty"]))
    messy = take(DIRT["messy_chars"])
    noise = rng.choice(["\x07", "  \n ", "\u00a0", "\ufeff", "\x1b", "\u3000"], len(messy))
    review.iloc[messy] = noise + review.iloc[messy].to_numpy() + noise
    verdict.iloc[take(DIRT["unknown_label"])] = rng.choice(
        ["mixed", "Positive", "5 stars"], int(n * DIRT["unknown_label"])
    )
    verdict.iloc[take(DIRT["missing_label"])] = None
    long = take(OVERLONG_ROWS / max(n, 1))
    review.iloc[long] = [("a very long review " * 700)[: 12_000 + i] for i in range(len(long))]
    return pd.DataFrame({"review": review, "verdict": verdict})


def write_config(csv: Path, folder: Path) -> Path:
    """A config that reads the CSV as a user's file source with declared labels."""
    from tasks.config import load_config

    cfg = load_config(
        None,
        [
            "name=bench-data",
            f"run_dir={folder / 'runs'}",
            "data.source.kind=file",
            f"data.source.path={csv}",
            "data.text_column=review",
            "data.label_column=verdict",
            f"data.labels=[{', '.join(LABELS)}]",
        ],
    )
    path = folder / "config.yaml"
    path.write_text(cfg.to_yaml())
    return path


# --- one step, in a child process ------------------------------------------------------------------


def run_step_here(step: str, config: Path, run_dir: Path) -> dict:
    """Run one step in this process; return its seconds, import seconds, rows in, and peak RSS."""
    t0 = time.perf_counter()
    import pandas  # noqa: F401  the libraries every step needs, timed apart from the work

    from tasks.config import load_config
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data
    from tasks.io import read_json, write_json
    from tasks.results import CleanResult, CollectResult

    if step == "validate":
        import great_expectations  # noqa: F401

        from tasks.data.validate import validate_data
    cfg = load_config(config, []).data
    refs = run_dir / "refs"
    t1, cpu1 = time.perf_counter(), time.process_time()
    if step == "collect":
        ref = collect_data(cfg, run_dir)
        rows = ref.rows
    elif step == "clean":
        raw = CollectResult(**read_json(refs / "collect.json"))
        ref = clean_data(raw.path, cfg, run_dir)
        rows = raw.rows
    else:
        clean = CleanResult(**read_json(refs / "clean.json"))
        ref = validate_data(clean, cfg, run_dir)
        rows = sum(clean.report["rows_out"].values())
    seconds, cpu = time.perf_counter() - t1, time.process_time() - cpu1
    write_json(refs / f"{step}.json", dataclasses.asdict(ref))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "step": step,
        "seconds": seconds,
        "cpu_s": cpu,
        "import_s": t1 - t0,
        "rows": rows,
        "peak_mb": peak_kb / 1024,
    }


def run_step_child(step: str, config: Path, run_dir: Path) -> dict:
    """Run one step in a fresh interpreter so its peak memory is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--step", step, "--config", str(config), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        sys.exit(f"step {step} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the report ------------------------------------------------------------------------------------


def print_table(results: list[dict], n: int, make_s: float, csv_mb: float) -> None:
    print(
        f"\ndata stage on {n:,} rows (CSV {csv_mb:.0f} MB, generated in {make_s:.1f} s); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'step':<10}{'seconds':>9}{'CPU s':>8}{'rows/s':>12}{'peak RSS MB':>13}{'imports s':>11}")
    for r in results:
        print(
            f"{r['step']:<10}{r['seconds']:>9.1f}{r['cpu_s']:>8.1f}{r['rows'] / r['seconds']:>12,.0f}"
            f"{r['peak_mb']:>13,.0f}{r['import_s']:>11.1f}"
        )
    total = sum(r["seconds"] for r in results)
    peak = max(r["peak_mb"] for r in results)
    print(
        f"{'total':<10}{total:>9.1f}{sum(r['cpu_s'] for r in results):>8.1f}{n / total:>12,.0f}{peak:>13,.0f}"
        f"{sum(r['import_s'] for r in results):>11.1f}"
    )
    verdict = "meets" if total < 60 and peak < 4096 else "MISSES"
    print(
        f"{verdict} the goal: < 60 s and < 4,096 MB peak. Seconds are wall time without imports; CPU s above "
        "seconds means several cores worked, below means the machine was busy with other work."
    )


def print_cleaning(run_dir: Path) -> None:
    from tasks.io import read_json

    report = read_json(run_dir / "refs" / "clean.json")["report"]
    removed = ", ".join(f"{k} {v:,}" for k, v in report["removed"].items() if v)
    print(f"cleaning: rows per split {report['rows_out']}; quarantined {report['quarantined']:,} ({removed})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1,000,000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    p.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal: one step in a child
    p.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:
        print(json.dumps(run_step_here(args.step, args.config, args.run_dir)))
        return 0

    folder = Path(tempfile.mkdtemp(prefix="ftflow-bench-data-"))
    t0 = time.perf_counter()
    csv = folder / "reviews.csv"
    make_rows(args.rows).to_csv(csv, index=False)
    make_s = time.perf_counter() - t0
    config, run_dir = write_config(csv, folder), folder / "run"
    (run_dir / "refs").mkdir(parents=True)
    results = [run_step_child(step, config, run_dir) for step in STEPS]
    print_table(results, args.rows, make_s, csv.stat().st_size / 2**20)
    print_cleaning(run_dir)
    if args.keep:
        print(f"files kept in {folder}")
    else:
        import shutil

        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
