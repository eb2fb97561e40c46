"""Hostile-input benchmark: the NER word splitter's worst case, before (quadratic) and after (linear).

Times `split_words` and one POST /predict through the real app (ASGI, ONNX Runtime, an NER bundle)
on "http://" + "." * (n - 8) + "a" for n = 2,000 and 20,000 characters, with the splitter as it
was and as it is, side by side in one run. Linear: 10x the text costs about 10x the time;
quadratic: about 100x.

    python bench/hostile_input.py                         # exports the packaged MiniLM as an NER bundle
    python bench/hostile_input.py --bundle runs/RUN/onnx  # an NER run's bundle
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LENGTHS = (2_000, 20_000)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=None, help="an NER serving bundle (default: export one)")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    import tasks.inference.predictor as predictor
    from deploy.service import create_app
    from tests.support import export_ner_bundle
    from tests.unit.test_split_words import QUADRATIC_WORD

    splitters = {
        "before (quadratic)": lambda text: [m.span() for m in QUADRATIC_WORD.finditer(text)],
        "after (linear)": predictor.split_words,
    }
    bundle = args.bundle or export_ner_bundle(Path(tempfile.mkdtemp(prefix="ftflow-bench-")))
    rows = []
    with TestClient(create_app(bundle_dir=str(bundle), poll_seconds=0)) as client:
        for name, split in splitters.items():
            predictor.split_words = split  # the predictor calls it through its module global
            for n in LENGTHS:
                text = "http://" + "." * (n - 8) + "a"  # n characters in all
                repeat = 1 if name.startswith("before") and n > 2_000 else 5  # the slow case once: ~5 s
                split_s = best_of(lambda split=split, text=text: split(text), repeat)
                request_s = best_of(
                    lambda text=text: client.post("/predict", json={"text": text}).raise_for_status(), repeat
                )
                rows.append((name, n, split_s, request_s))
    print("| splitter | characters | split_words ms | POST /predict ms |\n|---|---|---|---|")
    for name, n, split_s, request_s in rows:
        print(f"| {name} | {n:,} | {split_s * 1e3:.3f} | {request_s * 1e3:.1f} |")
    for name in splitters:
        (_, _, s1, r1), (_, _, s2, r2) = [r for r in rows if r[0] == name]
        print(f"{name}: 20,000 vs 2,000 characters: split_words {s2 / s1:.0f}x, request {r2 / r1:.0f}x")


if __name__ == "__main__":
    main()
