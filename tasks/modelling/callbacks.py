"""The Trainer callback that logs the training history into the flow's MLflow run and our logger."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from tasks.labels import is_per_class_metric
from tasks.platform import tracking
from tasks.progress import PROGRESS_RECORD, StepClock, format_eta, progress_bar

# How long an evaluation took: in MLflow, not in the log line.
EVAL_TIMINGS = ("val_runtime", "val_samples_per_second", "val_steps_per_second")
# The training log keeps the name it had when this lived in train.py: the step lines are the train stage's.
log = logging.getLogger("tasks.modelling.train")


def make_tracking_callback(run_id: str | None):
    """A callback that logs the Trainer's history into our run and our logger (rank 0 only), with an ETA.

    It replaces the Trainer's PrinterCallback: the history goes to the `tasks.modelling.train` logger (the
    Prefect task forwards it to the run log), and into the flow's MLflow run, never one of its own.
    In an interactive terminal it also draws a progress bar (step, loss, ETA); the console then
    skips the step lines the bar repeats (tasks/progress.py).
    """
    # heavy (transformers): loaded when this runs, so importing tasks.modelling.callbacks stays light
    from transformers import TrainerCallback

    class TrackingCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.clock, self.bar, self.open = StepClock(state.max_steps, state.global_step), None, ExitStack()
            if state.is_world_process_zero:
                self.bar = self.open.enter_context(progress_bar(state.max_steps, "train", state.global_step))

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.open.close()
            self.bar = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            renamed = {}
            for k, v in logs.items():
                if k in ("epoch", "total_flos") or not isinstance(v, (int, float)):
                    continue
                name = k if k.startswith("eval_") else f"train_{k}" if k in ("loss", "grad_norm") else k
                if k == "train_loss":  # the closing log's mean over all steps; not one more step's loss
                    name = "train_loss_mean"
                renamed[name.replace("eval_", "val_", 1)] = v
            renamed["epoch"] = state.epoch or 0.0
            step_line = "train_loss" in renamed
            eta = f" eta {format_eta(self.clock.eta(state.global_step))}" if step_line else ""
            if step_line and self.bar is not None:
                self.bar.set_postfix_str(f"loss={renamed['train_loss']:.4f}", refresh=False)
            # The log line keeps the summaries; per-class figures (50 classes: 200 of them) and timings go to MLflow.
            shown = {k: v for k, v in renamed.items() if not is_per_class_metric(k) and k not in EVAL_TIMINGS}
            log.info(
                "step %d/%d %s%s",
                state.global_step,
                state.max_steps,
                " ".join(f"{k}={v:.4g}" for k, v in shown.items()),
                eta,
                extra={PROGRESS_RECORD: step_line},
            )
            if run_id:
                tracking.log_metrics(run_id, renamed, step=state.global_step)

    return TrackingCallback()
