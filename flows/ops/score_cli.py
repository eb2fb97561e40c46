"""`ftflow score`: batch scoring from a shell. Standard library only here, so `ftflow --help` stays fast."""

from __future__ import annotations

import os

from flows.ops.command_env import prepare_command_env, print_refusal


def cmd_score(args) -> int:
    prepare_command_env()  # bundles carry their tokenizer: nothing to fetch
    # heavy (charset_normalizer, numpy, pandas, ... via flows.score): loaded when the command runs, so ftflow --help stays light
    from flows.score import score
    from tasks.score import input_by_reference

    # The flow run's parameters keep references; the password stays in this process's environment.
    input, exported = input_by_reference(args.input)
    os.environ.update(exported)
    try:
        # Options left out take the flow's defaults, so the two cannot drift apart.
        given = {k: getattr(args, k) for k in ("batch_size", "shard_rows") if getattr(args, k) is not None}
        r = score(
            model=args.model,
            input=input,
            output=args.output,
            query=args.query,
            text_column=args.text_column,
            text_pair_column=args.text_pair_column,
            label_column=args.label_column,
            dask_address=args.dask_address,
            workers=args.workers,
            **given,
        )
    except ValueError as e:  # our refusals speak to the user; the traceback is in the Prefect log above
        return print_refusal(e)
    print(f"\n=== scored {r['rows']} rows with {r['model']} ===")
    print(f"output:     {r['output']}")
    print(f"speed:      {r['texts_per_second']:.0f} texts/s ({r['seconds']:.1f} s on Dask)")
    if r["metrics"]:
        # The summaries (per-class keys carry a label name): f1, accuracy, f1_macro, f1_micro, subset_accuracy ...
        summary = ("_macro", "_micro", "_samples", "subset_accuracy", "hamming_loss")
        shown = {k: v for k, v in sorted(r["metrics"].items()) if "_" not in k or k.endswith(summary)}
        print("vs labels:  " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    print(f"MLflow run: {r['run_id']} in experiment 'scoring' (input digest {r['input_digest']})")
    return 0


def add_score_command(sub) -> None:
    """Register `ftflow score` on the CLI's sub-parsers."""
    sp = sub.add_parser(
        "score",
        help="score a file or SQL query with a registered model into a Parquet file (sharded across Dask workers)",
    )
    sp.add_argument("model", help="NAME (its champion), NAME@ALIAS (e.g. @challenger) or NAME/VERSION")
    sp.add_argument(
        "--input",
        required=True,
        metavar="PATH|URL",
        help="CSV, TSV, JSONL, JSON or Parquet file, a glob or a folder of them; or a SQLAlchemy URL "
        "(sqlite:///d.db, postgresql://reader:${DB_PASSWORD}@host/db) with --query. A password may be a "
        "${ENV} reference; a literal one is passed to the flow as a reference too, and shown masked",
    )
    sp.add_argument(
        "--query", default=None, metavar="SQL", help="SQL query giving the rows to score (with a URL --input)"
    )
    sp.add_argument(
        "--output",
        required=True,
        metavar="PATH.parquet",
        help="where to write the input columns plus prediction, confidence, probabilities, truncated, "
        "model_version (written atomically)",
    )
    sp.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    sp.add_argument(
        "--text-pair-column",
        default=None,
        help="column holding the second text (pair models; default: text_pair when present)",
    )
    sp.add_argument(
        "--label-column",
        default=None,
        help="also score the predictions against these labels (default: 'label' when present)",
    )
    sp.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per model call, length-sorted (default: the export gate's, training.eval_batch_size)",
    )
    sp.add_argument("--shard-rows", type=int, default=None, help="rows per Dask task (default 4096)")
    sp.add_argument(
        "--dask-address",
        default=None,
        metavar="tcp://HOST:PORT",
        help="an existing Dask scheduler; default: a local cluster, one worker process per core",
    )
    sp.add_argument("--workers", type=int, default=None, help="local cluster size (default: this machine's cores)")
    sp.set_defaults(func=cmd_score)
