"""`python tests/start_together.py GO_FILE ARGS...`: run `ftflow ARGS` once GO_FILE exists.

Tests start two of these, wait until both have done their imports (seconds), then create
GO_FILE: the two commands then start within milliseconds of each other.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import flows.deploy
import flows.training  # noqa: F401
from flows.ops.cli import main

if __name__ == "__main__":
    go = Path(sys.argv[1])
    Path(f"{go}.ready-{sys.argv[2]}-{time.monotonic_ns()}").touch()
    while not go.exists():
        time.sleep(0.005)
    sys.exit(main(sys.argv[2:]))
