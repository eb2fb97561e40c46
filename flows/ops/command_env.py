"""What every `ftflow` command sets before it imports a library, and how it reports a refusal. Standard library only."""

from __future__ import annotations

import os
import sys


def prepare_command_env(hub_offline: bool = True) -> None:
    """Quiet, offline-first defaults for a command's process; a variable the user set wins.

    hub_offline: set HF_HUB_OFFLINE=1 (bundles and the packaged model carry their tokenizer); `ftflow run`
    leaves it to the user, since a config may name a hub model.
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if hub_offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def print_refusal(error: Exception) -> int:
    """Print a refusal (a ValueError of ours, which speaks to the user) on stderr; the exit status 1."""
    print(f"\nerror: {error}", file=sys.stderr)
    return 1
