"""`ftflow`: run the flows from a shell. Heavy libraries load only inside commands."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from flows.ops.command_env import prepare_command_env
from flows.ops.deploy_cli import add_deploy_commands
from flows.ops.migrate_cli import add_migrate_command
from flows.ops.monitor_cli import add_monitor_command
from flows.ops.score_cli import add_score_command
from flows.ops.up_cli import add_up_command

EPILOG = (
    "Examples:\n  ftflow run configs/quickstart.yaml\n  ftflow run configs/sentiment.yaml --set training.epochs=2\n"
    "  ftflow run --resume-from runs/sentiment-20261129-020952-689d1553"
)


def _load(args):
    # third-party (pydantic, yaml via tasks.config): loaded when the command runs, so ftflow --help stays light
    from tasks.config import ConfigError, load_config

    try:
        return load_config(args.config, args.set)
    except ConfigError as e:
        sys.exit(f"error: {e}")


class _ConsoleQuiet(logging.Filter):
    """Keep errors off the console: the command prints one `error:` line, the log file has the tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and not record.getMessage().startswith("Finished in state Failed")


def log_to_file(command: str) -> str:
    """Send every Prefect log record, tracebacks included, to a log file; errors leave the console. Its path."""
    # heavy (prefect; charset_normalizer, pandas, pydantic, ... via tasks.data.sources): loaded when the command runs, so ftflow --help stays light
    from prefect.logging.configuration import setup_logging

    from tasks.data.sources import cache_dir

    path = cache_dir() / "logs" / f"ftflow-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    setup_logging()  # Prefect's own handlers first, so the filter lands on them
    for logger in (logging.getLogger(), logging.getLogger("uvicorn")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_ConsoleQuiet())
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("prefect", "ftflow"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("ftflow").setLevel(logging.DEBUG)
    return str(path)


def report_failure(error: Exception, log_path: str) -> int:
    """One clear error on the console; the traceback goes to the log file."""
    logging.getLogger("ftflow").error("the command failed", exc_info=error)
    # Our errors (ValueError and its kin) speak to the user; anything else also names its type.
    text = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    print(f"\nerror: {text}\nfull log (with the traceback): {log_path}", file=sys.stderr)
    return 1


def check_model(cfg) -> None:
    """Refuse a model that cannot load before any data is read or a server started."""
    # heavy (pandas via tasks.modelling.encode): loaded when the command runs, so ftflow --help stays light
    from tasks.modelling.encode import ModelSourceError, check_model_source

    try:
        check_model_source(cfg.model.name, cfg.model.revision)
    except ModelSourceError as e:
        sys.exit(f"error: {e}")


def cmd_run(args) -> int:
    if args.resume_from and args.config is None:  # resume with the config the run started with
        args.config = os.path.join(args.resume_from, "config.yaml")
        if not os.path.exists(args.config):
            sys.exit(
                f"error: --resume-from '{args.resume_from}' is not a run folder (no config.yaml); "
                f"give a folder under runs/ written by an earlier `ftflow run`"
            )
    cfg = _load(args)
    check_model(cfg)
    prepare_command_env(hub_offline=False)  # a config may name a hub model
    # heavy (numpy, pandas, prefect, ... via flows.training): loaded when the command runs, so ftflow --help stays light
    from flows.ops.temporary_server import prefect_api
    from flows.training import fine_tune

    log_path = log_to_file("run")
    try:
        with prefect_api():  # a temporary server here dies with this process, even on kill -9
            result = fine_tune(config=cfg, resume_from=args.resume_from)
    except Exception as e:
        return report_failure(e, log_path)
    print_result(result)
    return 0


def cmd_validate(args) -> int:
    cfg = _load(args)
    prepare_command_env(hub_offline=False)  # a config may name a hub model
    # heavy (numpy, pandas, prefect, ... via flows.training): loaded when the command runs, so ftflow --help stays light
    from flows.ops.temporary_server import prefect_api
    from flows.training import validate_only

    log_path = log_to_file("validate")
    try:
        with prefect_api():
            result = validate_only(config=cfg)
    except Exception as e:
        return report_failure(e, log_path)
    print(f"\ndata valid: rows per split {result['rows']}, quarantined {result['quarantined']}")
    print(f"report: {result['run_dir']}/data/validation/summary.md")
    print(f"MLflow UI: {result['ui_hint']}")
    return 0


def print_result(result: dict) -> None:
    print("\n=== fine-tune finished ===")
    print(f"MLflow run:   {result['run_name']} ({result['run_id']})")
    print(f"run folder:   {result['run_dir']}")
    reg = result.get("registered")
    if reg:
        print(f"registered:   {reg['name']} version {reg['version']} (alias '{reg['alias']}')")
    if result.get("parity"):
        p = result["parity"]
        print(
            f"ONNX parity:  {'passed' if p['passed'] else 'FAILED'} (max |Δprobability| {p['max_abs_diff']:.1e}); "
            f"serving {result['serving_file']}"
        )
    # not needed by ftflow --help (tasks.labels): loaded when the command runs, so --help stays fast
    from tasks.labels import is_per_class_metric

    metrics = result["metrics"]
    if "calibration_temperature" in metrics or "decision_threshold_mean" in metrics:
        how = (
            f"temperature {metrics['calibration_temperature']:.4f}"
            if "calibration_temperature" in metrics
            else f"Platt scaling and a threshold per label (mean threshold {metrics['decision_threshold_mean']:.3f})"
        )
        print(
            f"calibration:  {how}; test ECE "
            f"{metrics.get('test_ece_before', float('nan')):.4f} -> {metrics.get('test_ece_after', float('nan')):.4f}"
        )
    shown = {
        k.removeprefix("test_"): v
        for k, v in sorted(metrics.items())
        if k.startswith("test_")
        and isinstance(v, float)
        and k.count("_") <= 2
        and "support" not in k
        and "_ci_" not in k
    }
    print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    intervals = [
        f"{k[5:-7]} [{v:.4f}, {metrics[k[:-3] + 'high']:.4f}]"
        for k, v in sorted(metrics.items())
        # Per-label intervals (multi-label gives every label one) stay in metrics.json and MLflow.
        if k.startswith("test_") and k.endswith("_ci_low") and not is_per_class_metric(k[: -len("_ci_low")])
    ]
    if intervals:
        print("95% bootstrap intervals (test rows resampled): " + ", ".join(intervals))
    if result.get("baselines"):
        print("against cheap baselines (same splits; 95% intervals):")
    for row in result.get("baselines") or []:
        interval = f" [{row['ci_low']:.4f}, {row['ci_high']:.4f}]" if row["ci_low"] is not None else ""
        print(f"  {row['model']:<14} test {row['metric']} {row['value']:.4f}{interval}")
    if result.get("baseline_verdict"):
        print(("" if "NOT" not in result["baseline_verdict"] else "BELOW BASELINE: ") + result["baseline_verdict"])
    if result.get("blend"):
        print(result["blend"])
    if result.get("weak_classes"):
        print(f"WEAK CLASSES: {result['weak_classes']}")
    print(f"MLflow UI:    {result['ui_hint']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ftflow",
        description="Fine-tune BERT-family models with Prefect + MLflow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument(
            "config", nargs="?", default=None, help="YAML config (see configs/); built-in defaults when omitted"
        )
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set training.epochs=2 (repeatable)",
        )
        return sp

    run = with_config(sub.add_parser("run", help="run the fine-tune flow: data → train → evaluate → ONNX → registry"))
    run.add_argument(
        "--resume-from",
        metavar="RUN_DIR",
        default=None,
        help="continue an interrupted run from its last checkpoint, in the same MLflow run "
        "(uses RUN_DIR/config.yaml when no config is given)",
    )
    run.set_defaults(func=cmd_run)
    with_config(sub.add_parser("validate", help="run only the data stage (collect, clean, validate)")).set_defaults(
        func=cmd_validate
    )
    add_up_command(sub)
    add_deploy_commands(sub)
    add_monitor_command(sub)

    add_score_command(sub)
    add_migrate_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
