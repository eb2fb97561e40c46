"""The project's deployments, served together by one process: `python -m flows.deployments`.

`ftflow up` starts this process with PREFECT_API_URL and MLFLOW_TRACKING_URI pointing at its
servers. Each deployment's parameter is the typed PipelineConfig, so the Prefect UI shows a
form with the preset's values as defaults, and the server refuses a bad value before a run starts.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

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


def build_deployments(config_path: str | Path | None = None, timezone: str | None = None) -> list:
    """The RunnerDeployments of DEPLOYMENT_NAMES, with the config at `config_path` (the quickstart) as defaults."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.deployments.runner import EntrypointType

    from flows.deploy import promote, rollback
    from flows.monitor import monitor
    from flows.nightly import nightly
    from flows.retrain import retrain
    from flows.score import score
    from flows.training import fine_tune, validate_only
    from tasks.config import load_config

    cfg = load_config(config_path or DEFAULT_CONFIG)
    defaults = {"config": cfg.model_dump(mode="json")}
    # Module entrypoints: the runner imports `flows.x` wherever it runs, independent of its cwd.
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["finetune-flow", cfg.name]}
    return [
        nightly.to_deployment(
            "nightly",
            schedules=[CronSchedule(cron=NIGHTLY_CRON, timezone=timezone)],
            parameters=defaults,
            description="Every night: retrain on today's data, then "
            "the promotion gate (a better model becomes champion, a worse one is refused).",
            **common,
        ),
        fine_tune.to_deployment("manual", parameters=defaults, **common),
        promote.to_deployment("manual", parameters=model_defaults(cfg), **common),
        rollback.to_deployment("manual", parameters=model_defaults(cfg), **common),
        validate_only.to_deployment("manual", parameters=defaults, **common),
        monitor.to_deployment(
            "daily",
            schedules=[CronSchedule(cron=MONITOR_CRON, timezone=timezone)],
            parameters={**model_defaults(cfg), "monitoring": cfg.monitoring.model_dump(mode="json")},
            description="Every day: drift and feedback accuracy of the served champion; asks "
            "for a retrain (event ftflow.monitor.retrain-requested) when they pass their thresholds.",
            **common,
        ),
        # One retrain at a time: an alarm raised while a retrain runs is cancelled, not queued (the
        # running one already trains on the latest data and feedback).
        retrain.to_deployment(
            "on-drift",
            parameters={**defaults, "reason": "manual"},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            description="Run by the retrain-on-drift automation: fine-tune including feedback, "
            "then the promotion gate; `reason` is the monitor's finding. One at a time: "
            "a request while one runs is cancelled. Refused within monitoring.retrain_cooldown_hours of "
            "the model's last retrain unless `force`; waits while a nightly of the model trains.",
            **common,
        ),
        # The input and output paths are asked for at each run (Custom run in the UI).
        score.to_deployment("manual", parameters={"model": cfg.registry.model_name}, **common),
    ]


def model_defaults(cfg) -> dict:
    """Defaults of the registry flows (promote, rollback): the config's registered model."""
    return {"model_name": cfg.registry.model_name}


def serve_deployments(config_path: str | Path | None = None, timezone: str | None = None) -> None:
    """Register the deployments and run their flow runs until SIGTERM/Ctrl-C (schedules pause then)."""
    from prefect import serve

    serve(*build_deployments(config_path, timezone), pause_on_shutdown=True)


def create_stack_automation(prefect_api: str, config_path: str | None = None) -> str:
    """`ftflow up`'s retrain automation for the config's registered model, on the stack's Prefect API."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.automations import ensure_retrain_automation
    from tasks.config import load_config

    model_name = load_config(config_path or DEFAULT_CONFIG).registry.model_name
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        return ensure_retrain_automation(model_name)


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
        import psutil

        children = psutil.Process().children(recursive=True)
        for child in children:
            child.terminate()
        psutil.wait_procs(children, timeout=5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help=f"YAML config giving the parameter defaults ({DEFAULT_CONFIG.name})")
    p.add_argument("--timezone", default=None, help="IANA time zone of the nightly cron, e.g. Europe/Berlin (UTC)")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the starting process is gone")
    args = p.parse_args(argv)
    if args.exit_with_parent:
        exit_with_parent()
    serve_deployments(args.config, args.timezone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
