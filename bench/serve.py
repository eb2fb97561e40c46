"""Serving benchmark: a bounded load on the HTTP service over loopback.

Starts the real service (`python -m deploy.service`, uvicorn, ONNX Runtime) in a child process,
then sends single-text POST /predict requests from N concurrent clients (keep-alive
http.client connections in threads) until the request count or the time limit is reached. Prints p50, p99,
requests per second and errors. Goal: zero errors, p50 under 20 ms.

The prediction log is measured side by side (`--log both`, the default): two services, one with
FTFLOW_LOG_PREDICTIONS=0 and one logging to a fresh folder, take the load in alternating rounds so
that both see the same machine. After the logging service's clean shutdown every answered request
must be in its log. Goal: p50 at most 10% slower with the log, zero errors, zero lost log rows.

    python bench/serve.py                          # bundle of the newest run under ./runs (make run)
    python bench/serve.py --bundle runs/RUN/onnx   # a given bundle folder
    python bench/serve.py --model NAME             # NAME@champion from the registry (FTFLOW_MLRUNS, ...)
    python bench/serve.py --requests 500 --concurrency 4
    python bench/serve.py --log off                # one service, no prediction log

What a user would run instead is measured in the same run, under the same client load, in the
same alternating rounds (`--peers`, default both; `--peers none` skips them). Each is started by the
bench on 127.0.0.1 on a free port and stopped at the end:

- mlflow: the registered pyfunc version (the same ONNX bundle, through tasks/inference/pyfunc_model.py)
  under `mlflow models serve -m models:/NAME/VERSION --env-manager local`, asked with MLflow's
  `{"dataframe_split": {"columns": ["text"], "data": [[TEXT]]}}` body on /invocations;
- pipeline: a plain FastAPI app around a `transformers` text-classification pipeline on the same
  fine-tuned model's PyTorch weights (the run folder's model/), one text per request: `pipeline_app`
  below, the service a user would write in ten lines. It applies no calibration and no threshold.

After the load, the first `--agreement-texts` texts are asked of every arm one by one; the table
shows the share of labels equal to our service's and the largest probability difference.

    python bench/serve.py --requests 400 --peers pipeline     # only the pipeline peer
    python bench/serve.py --peer-requests 200                 # fewer requests for the peers

The clients run on the same cores as the server: on a 2-core machine they take a share of the
CPU, so the figures are a lower bound of what the service does alone.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.ops.supervisor import free_port  # noqa: E402  (after the path: the bench runs from anywhere)
from flows.ops.temporary_server import stop_server  # noqa: E402


@dataclass(frozen=True)
class Protocol:
    """How an arm is asked: where a text goes, in what body, how the answer reads, when it is ready."""

    path: str
    body: Callable[[str], dict]
    answer: Callable[[dict], dict]  # the response JSON -> {"label": ..., "scores": {label: probability}}
    ready: str  # GET path answering 200 once the model is loaded


def mlflow_answer(payload: dict) -> dict:
    """MLflow's {"predictions": [{"label": ..., "scores": "<JSON text>"}]} (the pyfunc returns a flat frame)."""
    import json

    row = payload["predictions"][0]
    scores = row["scores"]
    return {"label": row["label"], "scores": json.loads(scores) if isinstance(scores, str) else scores}


OURS = Protocol("/predict", lambda t: {"text": t}, lambda r: r["predictions"][0], "/ready")
PEER_PROTOCOLS = {
    "mlflow": Protocol(
        "/invocations", lambda t: {"dataframe_split": {"columns": ["text"], "data": [[t]]}}, mlflow_answer, "/ping"
    ),
    "pipeline": Protocol("/predict", lambda t: {"text": t}, lambda r: r, "/health"),
}
PEER_NAMES = {
    "mlflow": "mlflow models serve (pyfunc, ONNX)",
    "pipeline": "FastAPI + transformers pipeline",
}

FALLBACK_TEXTS = [
    "a wonderful, moving film",
    "tedious and far too long",
    "the cast is fine, the script is not",
    "one of the best of the year",
    "I walked out halfway through",
]


def newest_bundle(runs: Path) -> Path:
    found = sorted(
        (p / "onnx" for p in runs.glob("*") if (p / "onnx" / "finetune_flow.json").exists()),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        sys.exit(f"no run with an onnx/ bundle under {runs}; run `make run` first or pass --bundle/--model")
    return found[-1]


def sample_texts(bundle: Path | None) -> list[str]:
    """Real review snippets from the run's test split when there is one."""
    if bundle is not None:
        test = bundle.parent / "data" / "clean" / "test.parquet"
        if test.exists():
            import pandas as pd

            return list(pd.read_parquet(test)["text"].head(500))
    return FALLBACK_TEXTS


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and its live descendants (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    # `mlflow models serve` runs its uvicorn as a child process: count the whole tree.
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        own += sum(c or 0.0 for c in map(cpu_seconds, map(int, children)))
    return own


def start_service(args, port: int, log_dir: Path | None = None) -> subprocess.Popen:
    """The service in a child process; it logs its predictions to `log_dir` (None: no prediction log)."""
    cmd = [sys.executable, "-m", "deploy.service", "--port", str(port)]
    cmd += ["--bundle", str(args.bundle)] if args.bundle else [args.model]
    env = {
        **os.environ,
        "FTFLOW_ORT_THREADS": str(args.threads),
        "FTFLOW_POLL_SECONDS": "0",
        "FTFLOW_LOG_PREDICTIONS": "1" if log_dir else "0",
    }
    if log_dir:
        env["FTFLOW_PREDICTION_LOG"] = str(log_dir)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(
    proc: subprocess.Popen, url: str, timeout: float = 120, path: str = "/ready", log: Path | None = None
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = log.read_text()[-3000:] if log else proc.stderr.read()[-3000:]
            sys.exit(f"the service exited ({proc.returncode}):\n{said}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"the service was not ready within {timeout:.0f} s")


def run_load(
    url: str, texts: list[str], total: int, concurrency: int, time_limit: float, protocol: Protocol = OURS
) -> dict:
    """Send up to `total` requests from `concurrency` clients, stopping at `time_limit` seconds."""
    import http.client
    import json
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname, urlsplit(url).port
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + time_limit

    def client() -> None:
        # The standard library's keep-alive client: it takes far less of the shared CPU than httpx.
        conn = http.client.HTTPConnection(host, port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while time.monotonic() < stop_at:
            with lock:
                if issued[0] >= total:
                    break
                i = issued[0]
                issued[0] += 1
            body = json.dumps(protocol.body(texts[i % len(texts)]))
            t = time.perf_counter()
            try:
                conn.request("POST", protocol.path, body, headers)
                r = conn.getresponse()
                payload = r.read()
                if r.status == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors.append(f"HTTP {r.status}: {payload[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    return {"sent": issued[0], "ok": len(latencies), "errors": errors, "wall": wall, "latencies": latencies}


def stop_service(proc: subprocess.Popen) -> None:
    """SIGTERM, as an orchestrator stops it: uvicorn shuts down cleanly and the prediction log is drained."""
    stop_server(proc, grace=60)


class TextIn(BaseModel):
    text: str


def pipeline_app():
    """What a user would write instead: FastAPI around a transformers pipeline, one text per request.

    Served by the bench as `python -m uvicorn bench.serve:pipeline_app --factory`; the fine-tuned
    model folder comes from FTFLOW_BENCH_TORCH_MODEL. A plain `def` route: FastAPI runs it in its
    thread pool, torch releases the GIL in its kernels.
    """
    from fastapi import FastAPI

    from bench.peers import as_answer, label_names, text_classifier

    model_dir = Path(os.environ["FTFLOW_BENCH_TORCH_MODEL"])
    classifier = text_classifier(model_dir, batch_size=1)
    id2label = label_names(classifier, model_dir)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(item: TextIn) -> dict:
        scored = classifier(item.text)
        return as_answer(scored[0] if isinstance(scored[0], list) else scored, id2label)

    return app


def peer_sources(args) -> tuple[str | None, Path | None]:
    """The registered version to hand to `mlflow models serve` and the PyTorch model folder, for the bench's model."""
    from bench.peers import torch_model_dir
    from tasks.platform import tracking
    from tasks.score import resolve_model

    if args.model:
        model = resolve_model(args.model)
        uri, run_id = f"models:/{model.name}/{model.version}", model.run_id
    else:
        from tasks.io import read_json

        run_id = read_json(args.bundle.resolve().parent / "run.json")["run_id"]
        found = tracking.client().search_model_versions(f"run_id = {tracking.filter_value(run_id)}")
        uri = f"models:/{found[0].name}/{found[0].version}" if found else None
        if uri is None and "mlflow" in args.peers:
            sys.exit(
                f"no registered version comes from run {run_id} ({args.bundle}): pass --model NAME, or --peers pipeline"
            )
    torch_dir = None
    if "pipeline" in args.peers:
        torch_dir = args.torch_model or (
            args.bundle.resolve().parent / "model" if args.bundle else torch_model_dir(run_id)
        )
        if not (torch_dir / "config.json").exists():
            sys.exit(f"{torch_dir} holds no PyTorch model: pass --torch-model PATH, or --peers mlflow")
    return uri, torch_dir


def start_peer(name: str, port: int, uri: str | None, torch_dir: Path | None, log: Path) -> subprocess.Popen:
    """A peer server in its own process group (so that stopping it stops its children too), output to `log`."""
    from tasks.platform import tracking

    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if name == "mlflow":
        env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
        cmd = [
            str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", str(uri), "--env-manager", "local",
            "--host", "127.0.0.1", "-p", str(port),
        ]  # fmt: skip
    else:
        env["FTFLOW_BENCH_TORCH_MODEL"] = str(torch_dir)
        cmd = [sys.executable, "-m", "uvicorn", "bench.serve:pipeline_app", "--factory"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
    out = open(log, "w")  # noqa: SIM115  (the child holds it; closed with the process)
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_peer(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the peer's own process group (mlflow's uvicorn child too), then SIGKILL after `grace` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def ask_each(url: str, texts: list[str], protocol: Protocol) -> list[dict]:
    """Every text asked one by one; the answers as {label, scores}."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as client:
        answers = []
        for t in texts:
            r = client.post(protocol.path, json=protocol.body(t))
            r.raise_for_status()
            answers.append(protocol.answer(r.json()))
        return answers


def logged_rows(log_dir: Path) -> int:
    from tasks.monitoring.prediction_log import read_predictions

    return len(read_predictions(location=str(log_dir)))


def main(argv: list[str] | None = None) -> None:
    import tempfile

    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, help="serving bundle folder (a run's onnx/)")
    ap.add_argument("--model", help="registered model name: serve NAME@champion from the registry")
    ap.add_argument("--requests", type=int, default=2000, help="requests in all, per service")
    ap.add_argument("--concurrency", type=int, default=8, help="clients sending at the same time")
    ap.add_argument("--time-limit", type=float, default=300, help="stop sending after this many seconds per service")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per request in the service")
    ap.add_argument(
        "--log",
        choices=("both", "on", "off"),
        default="both",
        help="prediction log: both (side by side, alternating rounds), on, or off",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=16,
        help="alternating rounds per service with --log both "
        "(short rounds follow the load of a shared machine more closely)",
    )
    ap.add_argument(
        "--peers",
        default="mlflow,pipeline",
        help="what a user would run instead, side by side: mlflow, pipeline, both comma-separated (default), or none",
    )
    ap.add_argument(
        "--peer-requests", type=int, default=None, help="requests in all per peer (default: --requests, the same load)"
    )
    ap.add_argument(
        "--agreement-texts", type=int, default=200, help="texts asked of every arm one by one to compare answers"
    )
    ap.add_argument(
        "--torch-model", type=Path, default=None, help="PyTorch model folder for the pipeline peer (default: RUN/model)"
    )
    args = ap.parse_args(argv)
    if not args.model and not args.bundle:
        args.bundle = newest_bundle(ROOT / "runs")
    args.peers = [] if args.peers in ("", "none") else [p.strip() for p in args.peers.split(",")]
    if unknown := set(args.peers) - set(PEER_PROTOCOLS):
        ap.error(f"--peers: unknown {sorted(unknown)}; choose from mlflow, pipeline, or none")
    peer_uri, torch_dir = peer_sources(args) if args.peers else (None, None)

    variants = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.log]
    arms = variants + args.peers
    protocols = dict.fromkeys(variants, OURS) | {p: PEER_PROTOCOLS[p] for p in args.peers}
    requests = dict.fromkeys(variants, args.requests) | dict.fromkeys(args.peers, args.peer_requests or args.requests)
    rounds = args.rounds if len(arms) > 1 else 1
    work = Path(tempfile.mkdtemp(prefix="ftflow-bench-serve-"))
    procs, urls, logs = {}, {}, {}
    results = {v: {"sent": 0, "ok": 0, "errors": [], "wall": 0.0, "latencies": []} for v in arms}
    cpu = dict.fromkeys(arms, 0.0)
    answers: dict[str, list[dict]] = {}
    try:
        for v in variants:
            port = free_port()
            urls[v] = f"http://127.0.0.1:{port}"
            logs[v] = work / f"log-{v}" if v == "on" else None
            procs[v] = start_service(args, port, logs[v])
        for v in args.peers:
            port = free_port()
            urls[v] = f"http://127.0.0.1:{port}"
            procs[v] = start_peer(v, port, peer_uri, torch_dir, work / f"{v}.out")
        for v in arms:
            wait_ready(procs[v], urls[v], 300, protocols[v].ready, work / f"{v}.out" if v in args.peers else None)
        import httpx

        info = httpx.get(f"{urls[variants[0]]}/model", timeout=10).json()
        texts = sample_texts(args.bundle)
        warm = {v: run_load(urls[v], texts, 50, args.concurrency, 60, protocols[v]) for v in arms}  # connections
        for _ in range(rounds):
            for v in arms:  # alternating: every arm sees the same machine, load drift cancels out
                cpu0 = cpu_seconds(procs[v].pid)
                res = run_load(
                    urls[v], texts, requests[v] // rounds, args.concurrency, args.time_limit / rounds, protocols[v]
                )
                cpu1 = cpu_seconds(procs[v].pid)
                if cpu0 is not None and cpu1 is not None:
                    cpu[v] += cpu1 - cpu0
                for k in ("sent", "ok", "wall"):
                    results[v][k] += res[k]
                results[v]["errors"] += res["errors"]
                results[v]["latencies"] += res["latencies"]
        if args.peers:
            asked = texts[: args.agreement_texts]
            answers = {v: ask_each(urls[v], asked, protocols[v]) for v in (variants[0], *args.peers)}
    finally:
        for v, proc in procs.items():
            if v in args.peers:
                stop_peer(proc)
            else:
                stop_service(proc)
    print(
        f"service: {args.bundle or args.model} (version {info['version']}, {info['serving_file']}, "
        f"{args.threads} ORT thread(s) per request); cores {os.cpu_count()}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"load: single-text requests, {args.concurrency} concurrent clients, {rounds} alternating round(s)")
    from bench.peers import cpu_line, load_line

    print(f"CPU: {cpu_line()}; {load_line()} at the end")
    print(
        f"\n{'log':>5}{'requests':>9}{'ok':>7}{'errors':>8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'CPU ms/req':>12}{'logged':>8}{'lost':>6}"
    )
    p50 = {}
    lost_total = 0
    for v in variants:
        res = results[v]
        lat = np.array(res["latencies"]) * 1000
        pct = (lambda q, lat=lat: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
        p50[v] = pct(50)
        logged = lost = ""
        if logs[v] is not None:
            answered = res["ok"] + warm[v]["ok"]
            rows = logged_rows(logs[v])
            lost_total += answered - rows
            logged, lost = rows, answered - rows
        cpu_ms = 1000 * cpu[v] / res["sent"] if res["sent"] else float("nan")
        print(
            f"{v:>5}{res['sent']:>9}{res['ok']:>7}{len(res['errors']):>8}{res['ok'] / res['wall']:>9.1f}"
            f"{pct(50):>9.2f}{pct(90):>9.2f}{pct(99):>9.2f}{(lat.max() if len(lat) else float('nan')):>9.2f}"
            f"{cpu_ms:>12.2f}{logged:>8}{lost:>6}"
        )
        if res["errors"]:
            print("  first errors:", *res["errors"][:5], sep="\n    ")
    errors = sum(len(results[v]["errors"]) for v in variants)
    goal = not errors and all(p50[v] < 20 for v in variants)
    print(f"\ngoal (zero errors, p50 < 20 ms): {'met' if goal else 'NOT met'}")
    if len(variants) > 1:
        slower = p50["on"] / p50["off"] - 1
        met = not errors and slower <= 0.10 and lost_total == 0
        print(
            f"prediction log: p50 {100 * slower:+.1f}% with the log, {lost_total} log rows lost; goal (p50 at most "
            f"10% slower, zero errors, zero lost rows): {'met' if met else 'NOT met'}"
        )
    if args.peers:
        print_peers(args, variants[0], results, cpu, answers, peer_uri, torch_dir, texts[: args.agreement_texts])


def print_peers(
    args, ours: str, results: dict, cpu: dict, answers: dict, uri: str | None, torch_dir, texts: list[str]
) -> None:
    """Our service (its `ours` arm) beside what a user would run instead: speed, latency, agreement of answers."""
    import numpy as np

    from bench.peers import agreement, fp32_check, model_meta

    decision = (model_meta(torch_dir).get("decision") or {}) if torch_dir else {}
    temperature = float(decision.get("temperature", 1.0))
    print(f"\nagainst what a user would run instead (same load; answers of {len(texts)} texts compared):")
    if uri:
        print(f"  mlflow: mlflow models serve -m {uri} --env-manager local (1 uvicorn worker)")
    if torch_dir:
        print(f"  pipeline: FastAPI + transformers pipeline on {torch_dir} (PyTorch, CPU, no calibration or threshold)")
    print(
        f"{'arm':<38}{'requests':>9}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>11}"
        f"{'labels equal':>14}{'max |dp|':>10}"
    )
    names = {ours: f"ftflow service (deploy/, log {ours})", **PEER_NAMES}
    for v in (ours, *args.peers):
        res = results[v]
        lat = np.array(res["latencies"]) * 1000
        p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if len(lat) else (np.nan, np.nan)
        # The mlflow peer answers through the same inference core (temperature applied); the pipeline does not.
        t = temperature if v == "pipeline" else 1.0
        same, raw, tempered = (1.0, 0.0, 0.0) if v == ours else agreement(answers[ours], answers[v], t)
        dp = f"{tempered:.1e}" + ("*" if v == "pipeline" and temperature != 1.0 else "")
        print(
            f"{names[v]:<38}{res['sent']:>9}{len(res['errors']):>8}{res['ok'] / res['wall']:>8.1f}{p50:>9.2f}"
            f"{p99:>9.2f}{1000 * cpu[v] / max(res['sent'], 1):>11.2f}{same:>14.2%}{dp:>10}"
        )
        if v == "pipeline" and temperature != 1.0:
            print(
                f"  * with the model's temperature {temperature:.3g} applied to the pipeline's probabilities; as answered {raw:.1e}"
            )
        if res["errors"] and v != ours:
            print("  first errors:", *res["errors"][:3], sep="\n    ")
    if "pipeline" in args.peers:
        check = fp32_check(torch_dir, texts, answers["pipeline"])
        if check is not None:
            print(
                f"  cross-check, pipeline against the run's fp32 ONNX export (onnx/model.onnx): labels equal on "
                f"{check[0]:.2%}, largest probability difference {check[1]:.1e} with the temperature applied "
                f"(what differs from our service beyond this is int8 quantisation when it serves model.int8.onnx)"
            )
    base = results[ours]["ok"] / results[ours]["wall"]
    for v in args.peers:
        rate = results[v]["ok"] / results[v]["wall"]
        print(f"throughput ratio, ftflow service / {v}: {base / rate:.2f}x" if rate else f"{v}: no answers")


if __name__ == "__main__":
    main()
