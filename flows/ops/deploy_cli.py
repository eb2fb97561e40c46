"""`ftflow promote | rollback | history | serve`: the deploy commands.

Only the standard library is imported here; each command imports what it needs when it runs,
so `ftflow --help` stays fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from flows.ops.command_env import prepare_command_env, print_refusal

if TYPE_CHECKING:
    from tasks.registry.decision import PromotionDecision


def print_decision(d: PromotionDecision) -> None:
    """Print a PromotionDecision as `ftflow promote` and `ftflow rollback` show it."""
    # heavy (numpy, pandas, pydantic, ... via tasks.registry.decision_text): loaded when the command runs, so ftflow --help stays light
    from tasks.registry.decision_text import decision_lines

    print("\n" + "\n".join(decision_lines(d)))


BUSY_EXIT = 4  # another promotion or rollback of the model holds the lock; nothing was changed


def run_locked(move):
    """Run a promote or rollback flow; its decision, or the exit code of a refusal (busy lock) or an error."""
    # heavy (numpy, pandas, pydantic, ... via tasks.registry.lock): loaded when the command runs, so ftflow --help stays light
    from flows.ops.temporary_server import prefect_api
    from tasks.registry.lock import PromotionBusy

    try:
        with prefect_api():  # a temporary server here dies with this process, even on kill -9
            return move()
    except PromotionBusy as e:
        print(f"\nrefused: {e}", file=sys.stderr)
        return BUSY_EXIT
    except ValueError as e:
        return print_refusal(e)


def cmd_promote(args) -> int:
    prepare_command_env()  # bundles carry their tokenizer: nothing to fetch
    # heavy (numpy, pandas, prefect, ... via flows.deploy): loaded when the command runs, so ftflow --help stays light
    from flows.deploy import promote

    d = run_locked(
        lambda: promote(
            model_name=args.name,
            version=args.version,
            margin=args.margin,
            eval_data=args.eval_data,
            allow_data_warnings=args.allow_data_warnings,
            break_lock=args.break_lock,
            allow_below_baseline=args.allow_below_baseline,
        )
    )
    if isinstance(d, int):
        return d
    print_decision(d)
    return 0 if d.promoted else 3  # scripts can tell a refusal from a failure (1)


def cmd_rollback(args) -> int:
    prepare_command_env()  # bundles carry their tokenizer: nothing to fetch
    # heavy (numpy, pandas, prefect, ... via flows.deploy): loaded when the command runs, so ftflow --help stays light
    from flows.deploy import rollback

    d = run_locked(lambda: rollback(model_name=args.name, to_version=args.to, break_lock=args.break_lock))
    if isinstance(d, int):
        return d
    print_decision(d)
    return 0


def cmd_history(args) -> int:
    prepare_command_env()  # bundles carry their tokenizer: nothing to fetch
    # heavy (numpy, pandas, pydantic, ... via tasks.registry.decision): loaded when the command runs, so ftflow --help stays light
    from tasks.registry.decision import promotion_history
    from tasks.registry.decision_text import history_table
    from tasks.registry.register import CHAMPION, version_by_alias

    rows = promotion_history(args.name)
    if not rows:
        print(
            f"no promotion decisions recorded for '{args.name}' (experiment 'promotions'); "
            f"run `ftflow promote {args.name}`"
        )
        return 0
    print(history_table(rows))
    champ = version_by_alias(args.name, CHAMPION)
    print(f"\nchampion now: version {champ.version if champ else '-'}")
    return 0


def cmd_serve(args) -> int:
    prepare_command_env()  # bundles carry their tokenizer: nothing to fetch
    # heavy (fastapi, h11, pandas, ... via deploy.service): loaded when the command runs, so ftflow --help stays light
    from deploy.service import serve

    try:
        serve(
            args.name,
            host=args.host,
            port=args.port,
            poll_seconds=args.poll_seconds,
            max_batch=args.max_batch,
            threads=args.threads,
            insecure=args.insecure,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def add_deploy_commands(sub) -> None:
    """Register the deploy commands on the CLI's sub-parsers."""
    sp = sub.add_parser(
        "promote", help="re-score challenger and champion on the same held-out data; move 'champion' if it wins"
    )
    sp.add_argument("name", help="registered model name (registry.model_name of the config)")
    sp.add_argument(
        "--version",
        default=None,
        metavar="VERSION",
        help="model version to promote; default: the version holding 'challenger' now",
    )
    sp.add_argument(
        "--allow-data-warnings",
        action="store_true",
        default=None,
        help="promote even if the version's data passed validation only with warnings; "
        "default: the challenger config's registry.promote_with_data_warnings",
    )
    sp.add_argument(
        "--allow-below-baseline",
        action="store_true",
        default=None,
        help="promote even if the version did not beat the best cheap baseline on its test split "
        "(tag beats_baseline=false); default: the challenger config's registry.allow_below_baseline",
    )
    sp.add_argument(
        "--break-lock",
        action="store_true",
        help="clear the lock of an earlier promotion or rollback of NAME whose process is gone "
        "(exit 4 says another one holds it)",
    )
    sp.add_argument(
        "--margin",
        type=float,
        default=None,
        help="how much the challenger must beat the champion by on the primary metric; "
        "default: the challenger config's registry.promotion_margin",
    )
    sp.add_argument(
        "--eval-data",
        default=None,
        metavar="PATH",
        help="pinned evaluation set (parquet/csv/jsonl, columns as a run's data/clean/test.parquet); "
        "default: the challenger run's held-out split",
    )
    sp.set_defaults(func=cmd_promote)

    sp = sub.add_parser("rollback", help="move 'champion' back to an earlier version (recorded)")
    sp.add_argument("name", help="registered model name")
    sp.add_argument("--to", default=None, metavar="VERSION", help="version to serve; default: the previous champion")
    sp.add_argument(
        "--break-lock",
        action="store_true",
        help="clear the lock of an earlier promotion or rollback of NAME whose process is gone",
    )
    sp.set_defaults(func=cmd_rollback)

    sp = sub.add_parser("history", help="the promotion log of a model, as a table")
    sp.add_argument("name", help="registered model name")
    sp.set_defaults(func=cmd_history)

    sp = sub.add_parser(
        "serve", help="HTTP service answering with NAME@champion (ONNX Runtime; reloads when the alias moves)"
    )
    sp.add_argument("name", help="registered model name")
    sp.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all, which needs FTFLOW_API_TOKEN)",
    )
    sp.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    sp.add_argument(
        "--poll-seconds",
        type=float,
        default=None,
        help="how often to check the champion alias (env FTFLOW_POLL_SECONDS, default 10; 0: never)",
    )
    sp.add_argument("--max-batch", type=int, default=None, help="most texts per request (env FTFLOW_MAX_BATCH, 64)")
    sp.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime threads per request (env FTFLOW_ORT_THREADS, default 1)"
    )
    sp.add_argument(
        "--insecure",
        action="store_true",
        help="listen beyond loopback without FTFLOW_API_TOKEN (when a gateway in front does the auth)",
    )
    sp.set_defaults(func=cmd_serve)
