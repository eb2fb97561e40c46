"""The torchrun launch: the same `fit`, in N processes (gloo on CPU, nccl on GPUs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tasks.modelling.checkpoints import CHECKPOINTS


def launch_distributed(spec_path: Path, nproc: int) -> None:
    """Run `fit` under torchrun with N processes (gloo on CPU, nccl on GPUs)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--standalone",
        "-m",
        "tasks.modelling.train",
        str(spec_path),
    ]
    paths = [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise RuntimeError(
            f"distributed training failed (torchrun exit {proc.returncode}); its output is above. "
            f"Checkpoints so far are kept in {spec_path.parent / CHECKPOINTS}; re-run to resume."
        )
