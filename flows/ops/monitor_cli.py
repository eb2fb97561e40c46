"""`ftflow monitor NAME`: one monitor run from a shell. Standard library only until the command runs."""

from __future__ import annotations

import sys

from flows.ops.command_env import prepare_command_env, print_refusal


def cmd_monitor(args) -> int:
    prepare_command_env()  # the embedding model is the packaged MiniLM: offline
    # third-party (pydantic, yaml via tasks.config): loaded when the command runs, so ftflow --help stays light
    from tasks.config import ConfigError, load_config

    try:
        settings = load_config(args.config, [f"monitoring.{s}" for s in args.set]).monitoring
    except ConfigError as e:
        sys.exit(f"error: {e}")
    # heavy (prefect, pydantic, yaml via flows.monitor): loaded when the command runs, so ftflow --help stays light
    from flows.monitor import monitor

    try:
        r = monitor(model_name=args.name, monitoring=settings)
    except ValueError as e:
        return print_refusal(e)
    print(f"\n=== monitor: {r['model_name']} (champion version {r['champion_version']}) {r['status'].upper()} ===")
    print(f"window:    {r['window_start']} -> {r['window_end']}, {r['rows']} logged predictions")
    for t in (r["drift"] or {}).get("tests", []):
        mark = "DRIFT" if t["p_value"] < t["alpha"] else "ok"
        print(f"  {t['name']:<11} {t['method']:<5} p={t['p_value']:.3g} (threshold {t['alpha']:.3g})  {mark}")
    fb = r["feedback"]
    shown = f", accuracy {fb['accuracy']:.3f}" if fb["accuracy"] is not None else ""
    print(f"feedback:  {fb['rows']} rows{shown}")
    if r["reasons"]:
        print(f"findings:  {'; '.join(r['reasons'])}")
    print(f"retrain:   {'requested (event ' + str(r.get('event_id')) + ')' if r['retrain'] else 'no'}")
    print(f"recorded:  MLflow run {r['run_id']} in experiment 'monitoring'")
    return 4 if r["retrain"] else 0  # scripts can tell "drift found" from a failure (1)


def add_monitor_command(sub) -> None:
    """Register `ftflow monitor` on the CLI's subparsers."""
    sp = sub.add_parser(
        "monitor",
        help="compare a model's logged traffic with its champion's data (drift, "
        "feedback accuracy); asks for a retrain through a Prefect event",
    )
    sp.add_argument("name", help="registered model name (registry.model_name of its config)")
    sp.add_argument("--config", default=None, help="YAML config whose `monitoring` section to use (defaults otherwise)")
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a monitoring field, e.g. --set window_hours=6 --set p_value=0.01 (repeatable)",
    )
    sp.set_defaults(func=cmd_monitor)
