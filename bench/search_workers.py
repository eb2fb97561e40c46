"""Search across workers: one study of N trials on 2 workers (1 core each) against 1 worker (both cores).

    .venv/bin/python bench/search_workers.py                    # 8 trials of 80 updates, ~40 s each on one core
    .venv/bin/python bench/search_workers.py --trials 4 --steps 10   # a quick look

Both arms run the same search (same config, same seed) against a study in a real PostgreSQL
(flows/ops/postgres.py's LocalPostgres, as `ftflow up --postgres` starts it): a training run's
MLflow run holds the clean splits (search/data/), and each worker is a fresh process that runs what
a `search-trials` flow run runs (tasks/modelling/remote_search.run_search_trials: download the
splits, open the study, trials until it has N), with OMP_NUM_THREADS set to its share of the cores,
as `ftflow up --workers` sets it. Workers start together; the wall time runs from their start to the
last one's end. Printed per arm: wall time, the sum of the trials' own times (Optuna's start to
complete, pruned trials included), the schedule's efficiency = sum of trial times / (workers x
wall), goal >= 0.8 for 2 workers, the same after start-up (workers x (wall - start-up to the
first trial)), and the trials' states; then the wall time projected on N machines from the
2-worker arm: start-up + sum of trial times / (N x efficiency after start-up), never below
ceil(trials / N) mean trials.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.peers import cpu_line, load_line  # noqa: E402

PASSWORD_VAR = "BENCH_OPTUNA_PASSWORD"
CORES = 2


def bench_config(work: Path, trials: int, steps: int, storage: str):
    from tasks.config import load_config

    return load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            "name=bench-search",
            "data.max_rows=1200",
            "data.validation.min_rows=50",
            "model.max_length=64",
            "training.strategy=fine_tune",
            "training.min_updates=0",
            "training.train_batch_size=16",
            f"training.max_steps={steps}",
            f"training.eval_steps={max(1, steps // 2)}",  # two evaluations a trial: the median pruner compares
            f"search.trials={trials}",
            "search.space={learning_rate: {low: 1.0e-5, high: 2.0e-4, log: true}, warmup_ratio: {choices: [0.0, 0.1]}}",
            f"search.storage={storage}",
            f"run_dir={work / 'runs'}",
        ],
    )


def run_optimizer(config_file: str, parent: str, study: str, index: int) -> None:
    """One worker: what a search-trials flow run executes."""
    from tasks import quiet
    from tasks.config import PipelineConfig
    from tasks.modelling.remote_search import run_search_trials
    from tasks.platform import tracking

    quiet.silence_known_noise(torch_stage=True)
    tracking.configure()
    cfg = PipelineConfig.model_validate_json(Path(config_file).read_text())
    print(json.dumps(run_search_trials(cfg, parent, study, index)), flush=True)


def run_arm(cfg, clean, work: Path, workers: int) -> dict:
    """The search with `workers` worker processes of CORES // workers threads each; its figures."""
    from optuna.trial import TrialState

    from tasks.modelling.remote_search import publish_trial_data
    from tasks.modelling.search import open_search_study
    from tasks.platform import tracking

    parent = tracking.start_run("bench-search", f"{workers}-workers")
    publish_trial_data(clean, parent, work / f"published-{workers}")
    study_name = f"bench-{workers}w-{parent[:8]}"
    study = open_search_study(cfg, work, study_name)  # made once, as the training run makes it
    config_file = work / "config.json"
    config_file.write_text(cfg.model_dump_json())
    env = os.environ | {"OMP_NUM_THREADS": str(CORES // workers), "PYTHONPATH": str(ROOT)}
    t0 = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--optimizer", str(config_file), parent, study_name, str(i)],
            env=env,
            cwd=work,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(1, workers + 1)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.time() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {[p.returncode for p in procs]}")
    tracking.end_run(parent)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished]
    first_start = min(t.datetime_start.timestamp() for t in finished)
    per_worker = [len(json.loads(o.strip().splitlines()[-1])["trials_run"]) for o in outs]
    return {
        "load": os.getloadavg()[1],  # the 5-minute load at the arm's end: other work on a shared machine shows here
        "workers": workers,
        "threads": CORES // workers,
        "wall": wall,
        "sum_trials": sum(spans),
        "mean_trial": sum(spans) / len(spans),
        "efficiency": sum(spans) / (workers * wall),
        "fixed": first_start - t0,
        # The same, once the workers have started: how well the study's trials fill them.
        "trial_efficiency": sum(spans) / (workers * (wall - (first_start - t0))),
        "states": {s: sum(t.state.name == s for t in finished) for s in ("COMPLETE", "PRUNED")},
        "per_worker": per_worker,
        "best": study.best_value,
        "numbers": sorted(t.number for t in finished),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=80, help="optimizer updates per trial (~0.3 s each on one core)")
    p.add_argument("--first", type=int, choices=(1, 2), default=1, help="the arm (workers) that runs first")
    p.add_argument("--optimizer", nargs=4, metavar=("CONFIG", "PARENT", "STUDY", "INDEX"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.optimizer:
        config_file, parent, study, index = args.optimizer
        run_optimizer(config_file, parent, study, int(index))
        return 0

    from flows.ops.postgres import LocalPostgres, ensure_databases
    from tests.support import prepare

    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.chmod(0o755)  # run as root, the server runs as the postgres user, which must reach its folder
    os.environ["FTFLOW_MLRUNS"] = str(work / "mlruns")
    from tasks.platform import tracking

    tracking.configure()
    print(f"CPU: {cpu_line()}")
    server = LocalPostgres(work / "pg", log_path=work / "postgres.log", settings={"fsync": "off"}).start()
    try:
        db = server.database
        ensure_databases(db, ("optuna",))
        os.environ[PASSWORD_VAR] = db.password
        storage = f"postgresql://{db.user}:${{{PASSWORD_VAR}}}@{db.host}:{db.port}/optuna"
        cfg = bench_config(work, args.trials, args.steps, storage)
        clean = prepare(cfg, work / "data")
        print(f"{args.trials} trials of {args.steps} updates (batch 16, 64 tokens, MiniLM), study in PostgreSQL\n")
        # Same study config, one after the other; the table is in the order 1, 2 whichever ran first.
        order = (args.first, 3 - args.first)
        arms = sorted((run_arm(cfg, clean, work, w) for w in order), key=lambda a: a["workers"])
    finally:
        server.stop()
    print(
        "| workers x threads | wall | sum of trial times | mean trial | efficiency | start-up "
        "| efficiency after start-up | trials run by each | complete / pruned | load (5 min) at the end |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for a in arms:
        print(
            f"| {a['workers']} x {a['threads']} | {a['wall']:.1f} s | {a['sum_trials']:.1f} s | {a['mean_trial']:.1f} s "
            f"| {a['efficiency']:.2f} | {a['fixed']:.1f} s | {a['trial_efficiency']:.2f} "
            f"| {' + '.join(map(str, a['per_worker']))} "
            f"| {a['states']['COMPLETE']} / {a['states']['PRUNED']} | {a['load']:.1f} |"
        )
    one, two = arms
    print(
        f"\n2 workers against 1: wall {two['wall'] / one['wall']:.2f}x; efficiency of the 2-worker schedule "
        f"{two['efficiency']:.2f} (goal >= 0.8: {'met' if two['efficiency'] >= 0.8 else 'NOT met'})"
    )
    print("\nprojected wall on N machines, one 1-core worker each (start-up + sum / (N x efficiency after start-up)):")
    for n in (1, 2, 4, 8):
        floor = math.ceil(args.trials / n) * two["mean_trial"]
        projected = two["fixed"] + max(two["sum_trials"] / (n * two["trial_efficiency"]), floor)
        print(f"  N={n}: {projected:.0f} s")
    print(f"\n{load_line()} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
