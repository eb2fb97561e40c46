"""What the orchestration costs: the whole `fine_tune` flow against a bare Trainer script, side by side.

Both arms fine-tune the same model on the same rows with the same hyperparameters (the
quickstart config, shrunk by --rows / --epochs), each as a whole fresh process, in turns
(flow, bare, flow, bare, ...), so a drift in the machine's speed hits both. The flow arm is the
full pipeline as `ftflow up` runs it (Prefect and MLflow servers, started once here): collect,
clean, Great Expectations, train, evaluate, ONNX export with parity and int8, registry. The bare
arm is what a person would write without the pipeline: read the cleaned splits, Trainer, test score;
where the config names nothing (the optimizer's implementation), it keeps the Trainer's defaults.

Goal: flow wall ≤ 1.15 × bare wall + 15 s.

    .venv/bin/python bench/overhead.py                 # 1,200 rows, 1 epoch, 2 pairs
    .venv/bin/python bench/overhead.py --rows 3000 --pairs 3
    .venv/bin/python bench/overhead.py --embedded      # flow as `ftflow run`: no servers, temporary Prefect
    .venv/bin/python bench/overhead.py --arm bare --workdir DIR   # one arm once (for an outside timer)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RATIO_GOAL, FIXED_GOAL_S = 1.15, 15.0


def bench_config(workdir: Path, rows: int, epochs: float):
    from tasks.config import load_config

    return load_config(
        ROOT / "configs" / "quickstart.yaml",
        [
            f"data.max_rows={rows}",
            f"training.epochs={epochs}",
            f"run_dir={workdir / 'runs'}",
            "name=bench",
            "registry.model_name=bench-overhead",
            "registry.experiment=bench-overhead",
        ],
    )


def prepare(workdir: Path, rows: int, epochs: float) -> None:
    """Write the config and the cleaned splits the bare arm reads (untimed: the flow arm redoes it)."""
    from tasks.data.clean import clean_data
    from tasks.data.collect import collect_data

    cfg = bench_config(workdir, rows, epochs)
    (workdir / "config.json").write_text(cfg.model_dump_json())
    data_dir = workdir / "prepared"
    ref = clean_data(collect_data(cfg.data, data_dir).path, cfg.data, data_dir)
    (workdir / "data.json").write_text(json.dumps(dataclasses.asdict(ref), default=str))


def load_workdir_config(workdir: Path):
    from tasks.config import PipelineConfig

    return PipelineConfig.model_validate_json((workdir / "config.json").read_text())


def run_flow_arm(workdir: Path) -> dict:
    """The whole fine_tune flow; per-task times from the Prefect API when a server is there."""
    from flows.training import fine_tune

    state = fine_tune(config=load_workdir_config(workdir), return_state=True)
    result = state.result()
    out = {"test_accuracy": result["metrics"].get("test_accuracy"), "stages": {}}
    api = os.environ.get("PREFECT_API_URL")
    if api:
        import httpx

        runs = httpx.post(
            f"{api}/task_runs/filter",
            timeout=30,
            json={"flow_runs": {"id": {"any_": [str(state.state_details.flow_run_id)]}}},
        ).json()
        for r in runs:  # task run names are "<task>-<suffix>"
            name = r["name"].rsplit("-", 1)[0]
            out["stages"][name] = out["stages"].get(name, 0.0) + r["total_run_time"]
    return out


def run_bare_arm(workdir: Path) -> dict:
    """A plain Trainer script: the same model, rows, hyperparameters and evaluation; nothing else."""
    import numpy as np
    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tasks.modelling.encode import resolve_model_path
    from tasks.results import CleanResult

    cfg, data = load_workdir_config(workdir), CleanResult(**json.loads((workdir / "data.json").read_text()))
    tc, labels = cfg.training, data.labels
    path = resolve_model_path(cfg.model.name)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(tc.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )

    def encode(split: str) -> Dataset:
        df = pd.read_parquet(data.splits[split])
        enc = dict(tok(list(df["text"]), truncation=True, max_length=cfg.model.max_length))
        enc["labels"] = [labels.index(str(v)) for v in df["label"]]
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return Dataset.from_dict(enc)

    def metrics(pred) -> dict:
        p, y = pred.predictions.argmax(-1), pred.label_ids
        f1s = []
        for c in range(len(labels)):
            tp, fp, fn = ((p == c) & (y == c)).sum(), ((p == c) & (y != c)).sum(), ((p != c) & (y == c)).sum()
            f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
        return {"accuracy": float((p == y).mean()), "f1": float(np.mean(f1s))}

    args = TrainingArguments(
        output_dir=str(workdir / "bare" / "checkpoints"),
        per_device_train_batch_size=tc.train_batch_size,
        per_device_eval_batch_size=tc.eval_batch_size,
        num_train_epochs=tc.epochs,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,
        lr_scheduler_type=tc.scheduler,
        seed=tc.seed,
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=tc.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="f1",
        logging_steps=tc.logging_steps,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encode("train"),
        eval_dataset=encode("validation"),
        data_collator=DataCollatorWithPadding(tok),
        processing_class=tok,
        compute_metrics=metrics,
    )
    trainer.train()
    trainer.save_model(str(workdir / "bare" / "model"))
    test = trainer.evaluate(encode("test"), metric_key_prefix="test")
    return {"test_accuracy": test["test_accuracy"], "stages": {}}


def run_arm(arm: str, workdir: Path) -> None:
    """One arm once, in this process; its summary goes to WORKDIR/ARM-N.json."""
    out = run_flow_arm(workdir) if arm == "flow" else run_bare_arm(workdir)
    n = len(list(workdir.glob(f"{arm}-*.json")))
    (workdir / f"{arm}-{n}.json").write_text(json.dumps(out))


def cpu_of_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def time_arm(arm: str, workdir: Path, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole arm process, interpreter start and imports included.

    CPU (user + sys of the process and what it waited for) hardly moves when other work shares
    the machine; wall does. The servers' own CPU is not in the flow arm's figure.
    """
    log = workdir / f"{arm}.log"
    cpu0, t0 = cpu_of_children(), time.perf_counter()
    with open(log, "a") as fh:
        proc = subprocess.run(
            [sys.executable, __file__, "--arm", arm, "--workdir", str(workdir)],
            env=env,
            cwd=workdir,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    wall, cpu = time.perf_counter() - t0, cpu_of_children() - cpu0
    if proc.returncode != 0:
        sys.exit(f"the {arm} arm failed (exit {proc.returncode}); see {log}")
    return wall, cpu


def arm_env(workdir: Path, stack) -> dict:
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_HOME=str(workdir / "prefect-client"),
        FTFLOW_MLRUNS=str(workdir / "mlruns"),
        FTFLOW_CACHE=str(workdir / "cache"),
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    if stack is not None:
        env.update(PREFECT_API_URL=stack.prefect_api, MLFLOW_TRACKING_URI=stack.mlflow_url)
    return env


def print_rows(title: str, flow: list[float], bare: list[float]) -> None:
    ratios = [f / b for f, b in zip(flow, bare)]
    extra = [f - b for f, b in zip(flow, bare)]
    fmt = lambda xs: f"{min(xs):8.1f} {statistics.median(xs):8.1f} {max(xs):8.1f}"  # noqa: E731
    print(f"{title:28}{'min':>8} {'median':>8} {'max':>8}")
    print(f"{'  flow (fine_tune)':28}{fmt(flow)}")
    print(f"{'  bare Trainer script':28}{fmt(bare)}")
    print(
        f"{'  ratio flow/bare (pairs)':28}"
        + " ".join(f"{x:8.2f}" for x in (min(ratios), statistics.median(ratios), max(ratios)))
    )
    print(f"{'  flow - bare (pairs)':28}{fmt(extra)}")


def summarize(times: dict[str, list[tuple[float, float]]], workdir: Path, embedded: bool) -> None:
    walls = {arm: [w for w, _ in xs] for arm, xs in times.items()}
    cpus = {arm: [c for _, c in xs] for arm, xs in times.items()}
    flow, bare = walls["flow"], walls["bare"]
    print(f"\n{len(flow)} pairs, whole processes, flow {'embedded (as ftflow run)' if embedded else 'on servers'}")
    print_rows("wall seconds", flow, bare)
    print_rows("CPU seconds (user+sys)", cpus["flow"], cpus["bare"])
    fixed = statistics.median(flow) - RATIO_GOAL * statistics.median(bare)
    verdict = "within" if fixed <= FIXED_GOAL_S else "OVER"
    print(
        f"goal flow <= {RATIO_GOAL:.2f} x bare + {FIXED_GOAL_S:.0f} s: median flow - {RATIO_GOAL:.2f} x median bare"
        f" = {fixed:.1f} s -> {verdict} the goal"
    )
    accs = {
        arm: [json.loads(p.read_text())["test_accuracy"] for p in sorted(workdir.glob(f"{arm}-*.json"))]
        for arm in ("flow", "bare")
    }
    print(f"test accuracy: flow {accs['flow']}, bare {accs['bare']}")
    stages = [json.loads(p.read_text())["stages"] for p in sorted(workdir.glob("flow-*.json"))]
    if stages and stages[-1]:
        print(
            "flow tasks, seconds (median over runs; a nested task's time is in its parent's too): "
            + ", ".join(f"{k} {statistics.median(s.get(k, 0) for s in stages):.1f}" for k in stages[-1])
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1200, help="data.max_rows of both arms")
    p.add_argument("--epochs", type=float, default=1.0, help="training.epochs of both arms")
    p.add_argument("--pairs", type=int, default=2, help="flow/bare pairs, run in turns")
    p.add_argument("--embedded", action="store_true", help="flow arm as `ftflow run`: no servers")
    p.add_argument("--workdir", type=Path, default=None, help="folder for data, runs and logs (a temp one)")
    p.add_argument("--arm", choices=["flow", "bare"], default=None, help="run one arm once in this process")
    args = p.parse_args()
    if args.arm:
        run_arm(args.arm, args.workdir.resolve())
        return 0

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="ftflow-overhead-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare(workdir, args.rows, args.epochs)
    stack = None
    if not args.embedded:
        from flows.ops.stack import Stack

        stack = Stack(
            root=workdir, home=workdir / "stack", prefect_port=0, mlflow_port=0, store=workdir / "mlruns", serve=False
        ).start()
    try:
        env = arm_env(workdir, stack)
        times: dict[str, list[tuple[float, float]]] = {"flow": [], "bare": []}
        for i in range(args.pairs):
            for arm in ("flow", "bare"):
                times[arm].append(time_arm(arm, workdir, env))
                print(f"pair {i + 1}: {arm} wall {times[arm][-1][0]:.1f} s, CPU {times[arm][-1][1]:.1f} s", flush=True)
    finally:
        if stack is not None:
            stack.stop()
    summarize(times, workdir, args.embedded)
    print(f"logs and runs: {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
