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

The clients run on the same cores as the server: on a 2-core machine they take a share of the
CPU, so the figures are a lower bound of what the service does alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.ops.supervisor import free_port  # noqa: E402  (after the path: the bench runs from anywhere)
from flows.ops.temporary_server import stop_server  # noqa: E402

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
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


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


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the service exited ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit(f"the service was not ready within {timeout:.0f} s")


def run_load(url: str, texts: list[str], total: int, concurrency: int, time_limit: float) -> dict:
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
            body = json.dumps({"text": texts[i % len(texts)]})
            t = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, headers)
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
    args = ap.parse_args(argv)
    if not args.model and not args.bundle:
        args.bundle = newest_bundle(ROOT / "runs")

    variants = {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.log]
    rounds = args.rounds if len(variants) > 1 else 1
    work = Path(tempfile.mkdtemp(prefix="ftflow-bench-serve-"))
    procs, urls, logs = {}, {}, {}
    results = {v: {"sent": 0, "ok": 0, "errors": [], "wall": 0.0, "latencies": []} for v in variants}
    cpu = dict.fromkeys(variants, 0.0)
    try:
        for v in variants:
            port = free_port()
            urls[v] = f"http://127.0.0.1:{port}"
            logs[v] = work / f"log-{v}" if v == "on" else None
            procs[v] = start_service(args, port, logs[v])
        for v in variants:
            wait_ready(procs[v], urls[v])
        import httpx

        info = httpx.get(f"{urls[variants[0]]}/model", timeout=10).json()
        texts = sample_texts(args.bundle)
        warm = {v: run_load(urls[v], texts, 50, args.concurrency, 60) for v in variants}  # connections, pools
        for _ in range(rounds):
            for v in variants:  # alternating: both services see the same machine, load drift cancels out
                cpu0 = cpu_seconds(procs[v].pid)
                res = run_load(urls[v], texts, args.requests // rounds, args.concurrency, args.time_limit / rounds)
                cpu1 = cpu_seconds(procs[v].pid)
                if cpu0 is not None and cpu1 is not None:
                    cpu[v] += cpu1 - cpu0
                for k in ("sent", "ok", "wall"):
                    results[v][k] += res[k]
                results[v]["errors"] += res["errors"]
                results[v]["latencies"] += res["latencies"]
    finally:
        for proc in procs.values():
            stop_service(proc)
    print(
        f"service: {args.bundle or args.model} (version {info['version']}, {info['serving_file']}, "
        f"{args.threads} ORT thread(s) per request); cores {os.cpu_count()}, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(f"load: single-text requests, {args.concurrency} concurrent clients, {rounds} alternating round(s)")
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


if __name__ == "__main__":
    main()
