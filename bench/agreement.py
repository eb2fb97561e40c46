"""Agreement check: the export gate, batch scoring and the HTTP service give a labelled split the same answers.

For a registered model and a labelled file laid out like a run's clean split (e.g. its
data/clean/test.parquet), in one run:

- `ftflow score MODEL --input FILE` as a fresh process (local Dask cluster): its metric on the labels
  must be exactly the one the export gate recorded for the serving file (export_report.json);
- the real service (`python -m deploy.service --bundle`, uvicorn, loopback) is asked for every row in
  requests of `--request-size` texts: each answer must carry the label batch scoring gave the row, and
  every probability within 1e-6 of it.

    python bench/agreement.py quickstart-sentiment@challenger runs/<quickstart run>/data/clean/test.parquet

Exit status 0 when everything agrees, 1 otherwise (what differs is printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.score import run_ftflow_score  # noqa: E402  (after the path: the bench runs from anywhere)
from bench.serve import stop_service, wait_ready  # noqa: E402
from flows.ops.supervisor import free_port  # noqa: E402

TOLERANCE = 1e-6


def gate_metrics(bundle: Path) -> dict:
    """The export gate's test metrics for the file the bundle serves."""
    from tasks.io import read_json

    report_path = bundle / "export_report.json"
    if not report_path.exists():
        sys.exit(f"{report_path} is missing: the bundle carries no export gate report to compare with")
    report = read_json(report_path)
    return report["onnx_test_metrics"]["int8" if report["serving_file"] == "model.int8.onnx" else "fp32"]


def ask_service(bundle: Path, texts: list[str], pairs: list[str] | None, size: int) -> list[dict]:
    """Every text through the real service, `size` per request."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "deploy.service", "--port", str(port), "--bundle", str(bundle)]
    env = {**os.environ, "FTFLOW_POLL_SECONDS": "0", "FTFLOW_LOG_PREDICTIONS": "0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        answers = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(0, len(texts), size):
                body = {"texts": texts[i : i + size]} | ({"text_pairs": pairs[i : i + size]} if pairs else {})
                r = client.post("/predict", json=body)
                r.raise_for_status()
                answers += r.json()["predictions"]
        return answers
    finally:
        stop_service(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="NAME, NAME@ALIAS or NAME/VERSION (a classifier)")
    p.add_argument("input", help="a labelled Parquet file laid out like a clean split (text, label)")
    p.add_argument("--request-size", type=int, default=1, help="texts per service request (default 1)")
    args = p.parse_args(argv)

    import pandas as pd

    from tasks.platform import tracking
    from tasks.score import fetch_bundle, resolve_model

    model = resolve_model(args.model)
    bundle = fetch_bundle(model)
    gate = gate_metrics(bundle)
    frame = pd.read_parquet(args.input)
    with tempfile.TemporaryDirectory(prefix="ftflow-agreement-") as tmp:
        out = Path(tmp) / "scored.parquet"
        scored_run = run_ftflow_score(args.model, Path(args.input), out, None, None)
        scored = pd.read_parquet(out)
    # The scoring run's metrics as MLflow holds them (full precision; the CLI prints 4 digits).
    metrics = tracking.client().get_run(scored_run["run_id"]).data.metrics
    texts = [str(t) for t in frame["text"]]
    pairs = [str(t) for t in frame["text_pair"]] if "text_pair" in frame.columns else None
    served = ask_service(bundle, texts, pairs, args.request_size)

    problems = []
    for name in ("accuracy", "f1"):
        got, want = metrics.get(f"input_{name}"), gate.get(name)
        print(f"{name}: ftflow score {got!r}, export gate {want!r}")
        if got != want:
            problems.append(f"{name} differs: {got!r} (ftflow score) vs {want!r} (export gate)")
    labels_differ = sum(a["label"] != b for a, b in zip(served, scored["prediction"]))
    worst = max(abs(a["scores"][k] - b[k]) for a, b in zip(served, scored["probabilities"]) for k in b)
    print(
        f"{len(served)} rows asked of the service ({args.request_size} per request): {labels_differ} labels "
        f"differ from batch scoring, largest probability difference {worst:.2e} (tolerance {TOLERANCE:g})"
    )
    if labels_differ or worst > TOLERANCE:
        problems.append("the service and batch scoring disagree")
    print("AGREE" if not problems else "DISAGREE: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
