"""The `score` flow: batch scoring with a registered model, sharded across Dask workers.

It only composes tasks/score.py: every check runs here, in the flow, before the Dask cluster
starts; then each shard is a Prefect task on a Dask worker (prefect-dask's task runner: a local
cluster on this machine's cores, or an existing cluster at `dask_address`).
"""

from __future__ import annotations

import os
import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from tasks.platform import tracking
from tasks.score import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SHARD_ROWS,
    finish_scoring,
    input_source,
    open_scoring_run,
    prepare_scoring,
)
from tasks.score import score_shard as run


# No cache: the inputs are thousands of texts (hashing them buys nothing), and a result must come from
# the model version named in this run.
@task(name="score-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def score_shard(
    model, bundle_dir: str, texts: list[str], pairs: list[str] | None, batch_size: int, threads: int | None
) -> list[dict]:
    """One shard's answers, on whichever Dask worker runs it (the bundle loads once per worker)."""
    return run(model, bundle_dir, texts, pairs, batch_size, threads)


def dask_runner(dask_address: str | None, workers: int | None):
    """prefect-dask's task runner: the cluster at `dask_address`, else a local one with a process per core.

    An existing cluster's workers report to the Prefect API their own PREFECT_API_URL names.
    """
    # heavy (prefect_dask): loaded when this runs, so importing flows.score stays light
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    with get_client(sync_client=True) as client:
        api_url = client.api_url  # the temporary server's when none is configured: no second one per worker
    n = workers or os.cpu_count() or 1
    # One single-threaded process per core: ONNX Runtime and the tokenizer stay on the worker's own core.
    env = {"PREFECT_API_URL": str(api_url), "TOKENIZERS_PARALLELISM": "false"}
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True, "env": env})


@flow(name="score")
def score(
    model: str,
    input: str,
    output: str,
    query: str | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    dask_address: str | None = None,
    workers: int | None = None,
) -> dict:
    """Score every row of a file (CSV/TSV/JSONL/JSON/Parquet, glob or folder) or SQL query into a Parquet file.

    model: NAME (its champion), NAME@ALIAS or NAME/VERSION. input: a path, or a SQLAlchemy URL with
    `query`; Prefect stores this parameter as given, so a password goes in a ${ENV} reference (`ftflow
    score` passes a literal one as a reference itself). output: a .parquet path (the input columns plus prediction, confidence, probabilities,
    truncated, model_version). label_column: score against these labels too (default: `label` when
    present). dask_address: tcp://HOST:PORT of an existing Dask scheduler; default a local cluster
    of `workers` processes (default: one per core).
    """
    log = get_run_logger()
    # MLflow errors repeat the tracking URI, password included: masked before Prefect records them.
    with tracking.masked_errors():
        tracking.configure()
        planning = time.perf_counter()
        plan = prepare_scoring(
            model, input_source(input, query), text_column, text_pair_column, label_column, batch_size, shard_rows
        )
        engine = dask_address or f"local:{workers or os.cpu_count()}"
        log.info(
            "scoring %d rows of %s with %s in %d shards on Dask (%s); input read and checked in %.1f s",
            len(plan.texts),
            plan.origin,
            plan.model.label,
            len(plan.shards),
            engine,
            time.perf_counter() - planning,
        )
        run_id = open_scoring_run(plan, output, engine, {"prefect_flow_run_id": str(flow_run.get_id() or "")})
        with tracking.ended_run(run_id):
            start = time.perf_counter()
            with dask_runner(dask_address, workers) as runner:
                futures = [
                    runner.submit(
                        score_shard,
                        {
                            "model": plan.model,
                            "bundle_dir": plan.bundle_dir,
                            "texts": [plan.texts[i] for i in rows],
                            "pairs": [plan.pairs[i] for i in rows] if plan.pairs else None,
                            "batch_size": plan.batch_size,
                            "threads": 1 if not dask_address else None,
                        },
                    )
                    for rows in plan.shards
                ]
                shard_answers = [f.result() for f in futures]
            result = finish_scoring(plan, shard_answers, output, run_id, time.perf_counter() - start)
        log.info(
            "wrote %d rows to %s (%.0f texts/s); MLflow run %s in experiment 'scoring'",
            result["rows"],
            result["output"],
            result["texts_per_second"],
            run_id,
        )
        return result
