"""The project's deployments, served together by one process: `python -m flows.deployments`.

`ftflow up` starts this process with PREFECT_API_URL and MLFLOW_TRACKING_URI pointing at its
servers. Each deployment's parameter is the typed PipelineConfig, so the Prefect UI shows a
form with the preset's values as defaults, and the server refuses a bad value before a run starts.

Several configs (`--config a.yaml --config b.yaml`): each config's deployments carry its registered
model's name (`fine-tune/manual-<model>`), so two models never share a deployment, a schedule or an
automation. With `--work-pool NAME` the deployments are registered to that process work pool
instead of served here: Prefect workers run their flow runs, and this process only pauses their
schedules when the stack stops (as `serve` does).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, cast

import psutil

from flows.automations import RETRAIN_DEPLOYMENT, ensure_retrain_automation
from tasks.config import load_config
from tasks.modelling.study import TRIALS_DEPLOYMENT

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "quickstart.yaml"
NIGHTLY_CRON = "0 2 * * *"
MONITOR_CRON = "0 6 * * *"  # after the night's retrain and a morning's traffic
# 'flow/deployment', as the Prefect UI and `prefect deployment run` name them.
DEPLOYMENT_NAMES = [
    "fine-tune/nightly",
    "fine-tune/manual",
    "promote/manual",
    "rollback/manual",
    "validate-data/manual",
    "monitor/daily",
    "retrain/on-drift",
    "score/manual",
]
WORK_POOL = "ftflow-process"  # the process work pool of `ftflow up --workers N`


def stack_deployment_names(model_names: list[str | None]) -> list[str]:
    """Every deployment of a stack of these models: each model's, and the one search-trials deployment."""
    return [name for model in model_names for name in deployment_names(model)] + [TRIALS_DEPLOYMENT]


def deployment_names(model_name: str | None = None) -> list[str]:
    """DEPLOYMENT_NAMES, each deployment suffixed with `-<model_name>` when given (a stack of several models)."""
    return [qualified(name, model_name) for name in DEPLOYMENT_NAMES]


def qualified(full_name: str, model_name: str | None) -> str:
    """'flow/deployment' of one model in a stack of several: 'flow/deployment-<model>'; unchanged without a model."""
    return f"{full_name}-{model_name}" if model_name else full_name


def build_deployments(
    config_path: str | Path | None = None,
    timezone: str | None = None,
    qualify: bool = False,
    work_pool: str | None = None,
) -> list:
    """The RunnerDeployments of DEPLOYMENT_NAMES, with the config at `config_path` (the quickstart) as defaults.

    `qualify`: the names carry the config's registered model (deployment_names(model)), for a stack of
    several models. `work_pool`: for that process work pool, its flow runs started in the project's root
    (the module entrypoints import from there; no code storage).
    """
    # heavy (prefect; numpy, pandas via flows.deploy): loaded when this runs, so importing flows.deployments stays light
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.deploy import promote, rollback
    from flows.monitor import monitor
    from flows.nightly import nightly
    from flows.retrain import retrain
    from flows.score import score
    from flows.training import fine_tune, validate_only

    cfg = load_config(config_path or DEFAULT_CONFIG)
    defaults = {"config": cfg.model_dump(mode="json")}
    # Module entrypoints: the runner imports `flows.x` wherever it runs, independent of its cwd.
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["finetune-flow", cfg.name]}
    if work_pool:
        common |= {"work_pool_name": work_pool, "job_variables": {"working_dir": str(ROOT)}}
    model = cfg.registry.model_name if qualify else None

    def name(base: str) -> str:
        return qualified(base, model)

    deployments = [
        nightly.to_deployment(
            name("nightly"),
            schedules=[CronSchedule(cron=NIGHTLY_CRON, timezone=timezone)],
            parameters=defaults,
            description="Every night: retrain on today's data, then "
            "the promotion gate (a better model becomes champion, a worse one is refused).",
            **common,
        ),
        fine_tune.to_deployment(name("manual"), parameters=defaults, **common),
        promote.to_deployment(name("manual"), parameters=model_defaults(cfg), **common),
        rollback.to_deployment(name("manual"), parameters=model_defaults(cfg), **common),
        validate_only.to_deployment(name("manual"), parameters=defaults, **common),
        monitor.to_deployment(
            name("daily"),
            schedules=[CronSchedule(cron=MONITOR_CRON, timezone=timezone)],
            parameters={**model_defaults(cfg), "monitoring": cfg.monitoring.model_dump(mode="json")},
            description="Every day: drift and feedback accuracy of the served champion; asks "
            "for a retrain (event ftflow.monitor.retrain-requested) when they pass their thresholds.",
            **common,
        ),
        # One retrain at a time: an alarm raised while a retrain runs is cancelled, not queued (the
        # running one already trains on the latest data and feedback).
        retrain.to_deployment(
            name("on-drift"),
            parameters={**defaults, "reason": "manual"},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            description="Run by the retrain-on-drift automation: fine-tune including feedback, "
            "then the promotion gate; `reason` is the monitor's finding. One at a time: "
            "a request while one runs is cancelled. Refused within monitoring.retrain_cooldown_hours of "
            "the model's last retrain unless `force`; waits while a nightly of the model trains.",
            **common,
        ),
        # The input and output paths are asked for at each run (Custom run in the UI).
        score.to_deployment(name("manual"), parameters={"model": cfg.registry.model_name}, **common),
    ]
    if work_pool:
        run_in_root(deployments)
    return deployments


def run_in_root(deployments: list) -> None:
    """Deployments of the work pool run their flow runs in the project's root (no code storage)."""
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner.storage import LocalStorage

    # The pull step `set_working_directory` to the project's root: a worker's flow run runs the code there,
    # where the worker would otherwise copy its working directory into a new folder for each run.
    for deployment in cast(list[RunnerDeployment], deployments):  # to_deployment is sync here
        deployment.storage = LocalStorage(str(ROOT))


def build_trials_deployment(config_path: str | Path | None = None, work_pool: str | None = None):
    """search-trials/trials: the other optimizers of a training run's shared study (search.parallel).

    One per stack: the training run passes its own config, so the default (the first config's) is only the form's.
    """
    # heavy (prefect; torch via flows.search): loaded when this runs, so importing flows.deployments stays light
    from prefect.deployments.runner import EntrypointType

    from flows.search import search_trials

    cfg = load_config(config_path or DEFAULT_CONFIG)
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["finetune-flow", "search"]}
    if work_pool:
        common |= {"work_pool_name": work_pool, "job_variables": {"working_dir": str(ROOT)}}
    deployment = search_trials.to_deployment(
        TRIALS_DEPLOYMENT.split("/", 1)[1],
        parameters={"config": cfg.model_dump(mode="json")},
        description="Started by a training run with search.parallel > 1: one optimizer of its shared Optuna "
        "study (search.storage), running trials until the study has search.trials; not to be run by hand.",
        **common,
    )
    if work_pool:
        run_in_root([deployment])
    return deployment


def model_defaults(cfg) -> dict:
    """Defaults of the registry flows (promote, rollback): the config's registered model."""
    return {"model_name": cfg.registry.model_name}


def build_stack_deployments(
    config_paths: list[str] | None = None, timezone: str | None = None, work_pool: str | None = None
) -> list:
    """Every config's deployments (the quickstart's without a config); names carry the model when there are several."""
    paths: list[str | None] = list(config_paths or []) or [None]
    qualify = len(paths) > 1
    per_model = [d for path in paths for d in build_deployments(path, timezone, qualify, work_pool)]
    return [*per_model, build_trials_deployment(paths[0], work_pool)]


def serve_deployments(config_paths: list[str] | None = None, timezone: str | None = None) -> None:
    """Register the deployments and run their flow runs until SIGTERM/Ctrl-C (schedules pause then)."""
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect import serve

    serve(*build_stack_deployments(config_paths, timezone), pause_on_shutdown=True)


def ensure_work_pool(name: str = WORK_POOL) -> None:
    """Create the process work pool `name` unless it exists (a pool of another type is an error that says so)."""
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
                return
            except ObjectAlreadyExists:  # a starting worker made it first (it makes its pool when missing)
                pool = client.read_work_pool(name)
    if pool.type != "process":
        raise ValueError(
            f"work pool '{name}' exists with type '{pool.type}', not 'process'; delete it "
            f"(`prefect work-pool delete {name}`) or let `ftflow up --workers` use another Prefect server"
        )


def register_deployments(
    config_paths: list[str] | None = None, timezone: str | None = None, work_pool: str = WORK_POOL
) -> list:
    """Register the deployments to the process work pool (made when missing), their schedules active; their ids."""
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect.client.orchestration import get_client

    ensure_work_pool(work_pool)
    ids = [d.apply(work_pool_name=work_pool) for d in build_stack_deployments(config_paths, timezone, work_pool)]
    with get_client(sync_client=True) as client:
        for deployment_id in ids:  # paused by the last stop: the schedules run again
            client.resume_deployment(deployment_id)
    return ids


def pause_deployments(ids: list) -> None:
    """Pause the deployments' schedules: nobody may run them while the stack is down."""
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for deployment_id in ids:
            client.pause_deployment(deployment_id)


def hold_for_workers(config_paths: list[str] | None, timezone: str | None, work_pool: str) -> None:
    """Register the deployments to `work_pool`, wait for SIGTERM/Ctrl-C, then pause their schedules."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ids = register_deployments(config_paths, timezone, work_pool)
    print(f"registered {len(ids)} deployments to work pool '{work_pool}'; its workers run them", flush=True)
    while not stop.wait(1.0):
        pass
    pause_deployments(ids)
    print("All deployments have been paused!", flush=True)


def create_stack_automation(prefect_api: str, config_path: str | None = None, qualify: bool = False) -> str:
    """`ftflow up`'s retrain automation for the config's registered model, on the stack's Prefect API.

    `qualify`: the model's retrain deployment carries its name (a stack of several models).
    """
    # heavy (prefect): loaded when this runs, so importing flows.deployments stays light
    from prefect.settings import PREFECT_API_URL, temporary_settings

    model_name = load_config(config_path or DEFAULT_CONFIG).registry.model_name
    deployment = qualified(RETRAIN_DEPLOYMENT, model_name if qualify else None)
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        return ensure_retrain_automation(model_name, deployment)


def exit_with_parent(grace_s: float = 15.0) -> None:
    """Exit (and end our flow runs) once the parent is gone, e.g. `ftflow up` killed with SIGKILL.

    The parent's death also sends us SIGTERM (the stack asks for it), but the runner's graceful
    shutdown may then wait forever on a Prefect API that died at the same moment.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        time.sleep(grace_s)  # room for a graceful shutdown while the API may still answer
        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        psutil.wait_procs(children, timeout=5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help=f"YAML config giving the parameter defaults ({DEFAULT_CONFIG.name}); repeat it for several models",
    )
    p.add_argument("--timezone", default=None, help="IANA time zone of the nightly cron, e.g. Europe/Berlin (UTC)")
    p.add_argument(
        "--work-pool",
        default=None,
        metavar="NAME",
        help="register the deployments to this process work pool (made when missing) for its workers to run, "
        "instead of serving them here",
    )
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the starting process is gone")
    args = p.parse_args(argv)
    if args.exit_with_parent:
        exit_with_parent()
    if args.work_pool:
        hold_for_workers(args.config, args.timezone, args.work_pool)
    else:
        serve_deployments(args.config, args.timezone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
