"""`ftflow`: run the flows from a shell. Heavy libraries load only inside commands."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = ("Examples:\n  ftflow run configs/quickstart.yaml\n  ftflow run configs/sentiment.yaml --set training.epochs=2\n"
          "  ftflow run --resume-from runs/sentiment-20261129-020952-689d1553")


def _prepare_env() -> None:
    # No run of ours needs a hub: stay offline unless the user asked otherwise.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _load(args):
    from tasks.config import ConfigError, load_config

    try:
        return load_config(args.config, args.set)
    except ConfigError as e:
        sys.exit(f"error: {e}")


def cmd_run(args) -> int:
    if args.resume_from and args.config is None:  # resume with the config the run started with
        args.config = os.path.join(args.resume_from, "config.yaml")
        if not os.path.exists(args.config):
            sys.exit(f"error: --resume-from '{args.resume_from}' is not a run folder (no config.yaml); "
                     f"give a folder under runs/ written by an earlier `ftflow run`")
    cfg = _load(args)
    _prepare_env()
    from flows.training import fine_tune

    try:
        result = fine_tune(config=cfg, resume_from=args.resume_from)
    except ValueError as e:  # our errors speak to the user; the traceback is in the Prefect log above
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    print_result(result)
    return 0


def cmd_validate(args) -> int:
    cfg = _load(args)
    _prepare_env()
    from flows.training import validate_only

    try:
        result = validate_only(config=cfg)
    except ValueError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
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
        print(f"ONNX parity:  {'passed' if p['passed'] else 'FAILED'} (max |Δlogit| {p['max_abs_diff']:.1e}); "
              f"serving {result['serving_file']}")
    metrics = result["metrics"]
    print("test metrics: " + ", ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(metrics.items())
                                       if isinstance(v, float) and k.count("_") <= 2 and "support" not in k))
    intervals = [f"{k[5:-7]} [{v:.4f}, {metrics[k[:-3] + 'high']:.4f}]" for k, v in sorted(metrics.items())
                 if k.endswith("_ci_low")]
    if intervals:
        print("95% bootstrap intervals (test rows resampled): " + ", ".join(intervals))
    print(f"MLflow UI:    {result['ui_hint']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftflow", description="Fine-tune BERT-family models with Prefect + MLflow.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("config", nargs="?", default=None,
                        help="YAML config (see configs/); built-in defaults when omitted")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set training.epochs=2 (repeatable)")
        return sp

    run = with_config(sub.add_parser("run", help="run the fine-tune flow: data → train → evaluate → ONNX → registry"))
    run.add_argument("--resume-from", metavar="RUN_DIR", default=None,
                     help="continue an interrupted run from its last checkpoint, in the same MLflow run "
                          "(uses RUN_DIR/config.yaml when no config is given)")
    run.set_defaults(func=cmd_run)
    with_config(sub.add_parser("validate", help="run only the data stage (collect, clean, validate)"))\
        .set_defaults(func=cmd_validate)
    from flows.stack import add_up_command  # standard library only: --help stays fast

    add_up_command(sub)
    from flows.deploy_cli import add_deploy_commands  # standard library only, likewise

    add_deploy_commands(sub)
    from flows.monitor_cli import add_monitor_command  # standard library only, likewise

    add_monitor_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
