"""GPU check: the pipeline's training, evaluation and ONNX export on one CUDA GPU, in under 5 minutes.

1. Training through `train_model` with mixed_precision auto (bf16 where the GPU runs it natively,
   else fp16) and fused AdamW, against the same training in fp32: examples per second of both,
   timed over the optimizer steps after a warm-up, on the same rows, steps and seed.
2. Evaluation through `evaluate_model`, which scores on the GPU; the GPU memory it used proves it.
3. ONNX export through `export_model` (CPU parity, as the pipeline checks it), then parity of the
   fp32 graph on ONNX Runtime's CUDA execution provider against PyTorch on the GPU (TF32 off on
   both sides, so both compute in fp32).

    python bench/gpu_check.py            # ~2-4 min on one recent GPU
    python bench/gpu_check.py --steps 30 --rows 3000    # quicker

Needs a CUDA build of torch and, for step 3, onnxruntime-gpu (the CPU `onnxruntime` package has
no CUDA execution provider). Exits 2 with a message when no CUDA device is visible, 1 when a
check fails, 0 when all pass. Results: bench/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.padding import ROOT, build_config, prepare_data
from tasks.results import CleanResult

WARMUP_STEPS = 10  # CUDA context, cuBLAS handles and kernel selection happen in the first steps
BUDGET_S = 300


def no_cuda_message() -> str | None:
    """Why this machine cannot run the check, or None when torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return None
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (
        f"gpu_check: no CUDA device is visible to torch {torch.__version__} ({build}). Run it on a machine "
        "with an NVIDIA GPU, its driver and a CUDA build of torch (pip install torch --index-url "
        "https://download.pytorch.org/whl/cu128), plus onnxruntime-gpu for the ONNX check; "
        "check CUDA_VISIBLE_DEVICES if the GPU is there."
    )


def make_gpu_step_timer(warmup: int):
    """A TrainerCallback summing the optimizer steps' own time after `warmup` steps (evaluation and saving excluded).

    The GPU is synchronised at both ends of a step: otherwise the clock sees only the kernels' launch.
    """
    import torch
    from transformers import TrainerCallback

    class GpuStepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.steps, self.began = 0.0, 0, None

        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            if state.global_step > warmup:
                self.seconds += time.perf_counter() - self.began
                self.steps += 1

        def examples_per_s(self, batch: int) -> float:
            return self.steps * batch / self.seconds

    return GpuStepTimer()


def train_variant(args, clean_ref: CleanResult, folder: Path, precision: str) -> dict:
    """Train one precision on the GPU; return its speed, its settings as the Trainer saw them and the model folder."""
    from tasks.modelling.train import train_model

    cfg = build_config(args, folder, [f"training.mixed_precision={precision}"])
    timer = make_gpu_step_timer(WARMUP_STEPS)
    trained = train_model(clean_ref, cfg, folder, callbacks=[timer])
    return {
        "precision": precision,
        "examples_per_s": timer.examples_per_s(args.batch),
        "timed_steps": timer.steps,
        "train_loss": trained.summary["train_loss"],
        "model_dir": trained.model_dir,
        "cfg": cfg,
    }


def evaluate_on_gpu(run: dict, clean_ref: CleanResult, folder: Path) -> dict:
    """Score the test split with `evaluate_model`; the peak GPU memory shows where it ran."""
    import torch

    from tasks.modelling.evaluate import evaluate_model

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()  # what earlier trainings may still hold
    start = time.perf_counter()
    evaluation = evaluate_model(run["model_dir"], clean_ref, run["cfg"], folder)
    seconds = time.perf_counter() - start
    used = torch.cuda.max_memory_allocated() - before
    return {
        "test_accuracy": evaluation.metrics["test_accuracy"],
        "seconds": seconds,
        "gpu_memory_used_mib": used / 2**20,
        "on_gpu": used > 0,
    }


def onnx_parity_on_cuda(run: dict, clean_ref: CleanResult, folder: Path) -> dict:
    """Export as the pipeline does, then compare the fp32 graph on the CUDA execution provider with PyTorch on the GPU."""
    import onnxruntime as ort
    import torch

    from tasks.io import read_frame
    from tasks.modelling.evaluate import load_trained
    from tasks.modelling.export import check_parity, export_model, parity_batches, sample_inputs
    from tasks.modelling.predict import onnx_forward, torch_forward

    cfg = run["cfg"]
    exported = export_model(run["model_dir"], clean_ref, cfg, folder)
    result = {"cpu_parity": exported.parity, "providers_available": ort.get_available_providers()}
    if "CUDAExecutionProvider" not in result["providers_available"]:
        return {
            **result,
            "passed": False,
            "why": "onnxruntime has no CUDAExecutionProvider here: pip install onnxruntime-gpu "
            "(in place of onnxruntime) with the CUDA version of this driver",
        }
    try:
        session = ort.InferenceSession(exported.fp32, providers=[("CUDAExecutionProvider", {"use_tf32": 0})])
    except Exception as e:  # e.g. a cuDNN or CUDA library of another version than onnxruntime-gpu was built for
        return {**result, "passed": False, "why": f"the CUDA execution provider did not start: {e}"}
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return {**result, "passed": False, "why": f"the session fell back to {session.get_providers()}"}
    torch.backends.cuda.matmul.allow_tf32 = False  # the default; stated, since parity depends on it
    model, tokenizer, _ = load_trained(run["model_dir"])
    model.to("cuda")
    test = read_frame(clean_ref.splits["test"])
    batches = parity_batches(tokenizer, sample_inputs(test, cfg.data.task), cfg.model.max_length, cfg.data.task)
    parity = check_parity(torch_forward(model), onnx_forward(session), batches, cfg.export.parity_atol)
    return {
        **result,
        "cuda_parity": parity,
        "passed": bool(parity["passed"] and exported.parity["passed"]),
        "why": None if parity["passed"] else f"max |Δlogit| {parity['max_abs_diff']:.2e} > {parity['atol']}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=None, help="rows of the packaged movie reviews; default all 12.8k")
    p.add_argument(
        "--steps", type=int, default=60, help=f"optimizer steps of each run (the first {WARMUP_STEPS} untimed)"
    )
    p.add_argument(
        "--batch",
        type=int,
        default=128,
        help="training batch size; large enough that the GPU computes more than it waits on launches",
    )
    p.add_argument("--max-length", type=int, default=128, help="tokens per example at most")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"), help="JSON results file")
    args = p.parse_args(argv)
    if args.steps <= WARMUP_STEPS + 5:
        p.error(f"--steps must be more than {WARMUP_STEPS + 5}: the first {WARMUP_STEPS} are a warm-up")
    message = no_cuda_message()
    if message:
        print(message, file=sys.stderr)
        return 2

    import torch

    from tasks.modelling.precision import pick_precision
    from tasks.quiet import silence_known_noise

    silence_known_noise(torch_stage=True)
    started = time.perf_counter()
    chosen = pick_precision("auto", use_cpu=False)
    mixed = "bf16" if chosen["bf16"] else "fp16"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        clean_ref = prepare_data(build_config(args, tmp, []), tmp / "data")
        runs = {name: train_variant(args, clean_ref, tmp / name, name) for name in (mixed, "fp32")}
        evaluation = evaluate_on_gpu(runs[mixed], clean_ref, tmp / mixed)
        onnx = onnx_parity_on_cuda(runs[mixed], clean_ref, tmp / mixed)
    elapsed = time.perf_counter() - started

    speedup = runs[mixed]["examples_per_s"] / runs["fp32"]["examples_per_s"]
    checks = {
        "mixed-precision training faster than fp32": speedup > 1.0,
        "evaluation ran on the GPU": evaluation["on_gpu"],
        "ONNX parity on the CUDA execution provider": onnx["passed"],
        f"finished within {BUDGET_S} s": elapsed <= BUDGET_S,
    }
    print(
        f"\nGPU check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda}): "
        f"MiniLM, {args.rows or 'all'} rows, {args.steps} steps x batch {args.batch}, max_length {args.max_length}, "
        f"fused AdamW, seed {args.seed}"
    )
    print(f"auto precision picked: {mixed}")
    for name, run in runs.items():
        print(
            f"  {name:>5}: {run['examples_per_s']:8.1f} examples/s over {run['timed_steps']} steps, "
            f"train loss {run['train_loss']:.4f}"
        )
    print(f"  {mixed} / fp32: {speedup:.2f}x")
    print(
        f"evaluation ({mixed}-trained model, fp32 weights): test accuracy {evaluation['test_accuracy']:.4f} in "
        f"{evaluation['seconds']:.1f} s, GPU memory used {evaluation['gpu_memory_used_mib']:.0f} MiB"
    )
    cpu_parity = onnx["cpu_parity"]
    print(
        f"ONNX parity: CPU provider max |Δlogit| {cpu_parity['max_abs_diff']:.2e}; "
        + (
            f"CUDA provider max |Δlogit| {onnx['cuda_parity']['max_abs_diff']:.2e}"
            if "cuda_parity" in onnx
            else f"CUDA provider not checked: {onnx['why']}"
        )
    )
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    print(f"total {elapsed:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for run in runs.values():
        run.pop("cfg")
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "device": torch.cuda.get_device_name(0),
                "precision": mixed,
                "runs": runs,
                "speedup": speedup,
                "evaluation": evaluation,
                "onnx": onnx,
                "checks": checks,
                "seconds": elapsed,
            },
            indent=2,
            default=str,
        )
    )
    print(f"written: {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
