"""Precision: bf16 autocast where the device runs it natively, else fp16 (GPUs) or fp32."""

from __future__ import annotations

import logging
from typing import TypedDict

log = logging.getLogger(__name__)

# CPU features that run bf16 matrix products natively (Intel AMX, AVX512-BF16); without them
# autocast emulates bf16 and trains slower than fp32.
NATIVE_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


class Precision(TypedDict):
    """The Trainer's two mixed-precision flags, passed to TrainingArguments as keywords."""

    bf16: bool
    fp16: bool


def cpu_flags() -> set[str]:
    """The CPU's feature flags: torch's own capability check, else /proc/cpuinfo; empty when unknown."""
    # heavy (torch): loaded when this runs, so importing tasks.modelling.precision stays light
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return {name for name, value in get_capabilities().items() if value is True}
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def cpu_runs_bf16_natively(flags: set[str] | None = None) -> bool:
    """True when this CPU has AMX-BF16 or AVX512-BF16 (bf16 autocast is then faster than fp32)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_CPU_BF16_FLAGS)


def pick_precision(mode: str, use_cpu: bool) -> Precision:
    """The Trainer's precision flags: bf16 autocast where the device runs it natively, else fp16 (GPUs) or fp32.

    auto: on GPUs bf16 where native, else fp16; on CPUs bf16 with AMX-BF16 or AVX512-BF16, else
    fp32. fp32 (or no) turns mixed precision off; bf16 and fp16 force it (fp16 on GPUs only: on
    CPUs it has no native kernels and no loss scaler). The weights stay fp32 either way.
    """
    # heavy (torch): loaded when this runs, so importing tasks.modelling.precision stays light
    import torch

    if mode in ("fp32", "no"):
        return {"bf16": False, "fp16": False}
    if use_cpu or not torch.cuda.is_available():
        if mode == "auto":
            mode = "bf16" if cpu_runs_bf16_natively() else "fp32"
        elif mode == "fp16":
            log.warning(
                "training.mixed_precision=fp16 needs a GPU; training in fp32 on this CPU "
                "(bf16 or auto use the CPU's bf16 where it has it)"
            )
        return {"bf16": mode == "bf16", "fp16": False}
    if mode == "auto":
        # Without including_emulation=False, pre-Ampere GPUs (T4, V100) report bf16 and run it emulated, slowly.
        mode = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}
