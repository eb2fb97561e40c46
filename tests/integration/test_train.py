"""Training features on the real Trainer and the real offline MiniLM, a few steps each.

Gradient accumulation, optimisers and schedules, early stopping, resume after an
interruption, hyperparameter search with nested MLflow runs, and 2-process DDP (gloo).
Each holds on a machine with a GPU too: what needs the CPU says training.use_cpu=true.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tests.support import prepare, small_config

pytestmark = pytest.mark.slow


def tiny(tmp: Path, *overrides: str):
    return small_config(tmp, "data.max_rows=240", "training.eval_batch_size=64", *overrides)


@pytest.fixture(scope="module")
def clean_ref(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    return prepare(tiny(tmp), tmp / "prep")


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of a key in the Trainer's log history, from the run folder's summary."""
    history = json.loads((run_dir / "train_summary.json").read_text())["log_history"]
    return [(h["step"], h[key]) for h in history if key in h]


def test_gradient_accumulation_keeps_the_loss_scale(clean_ref, tmp_path):
    """16 examples in one batch, or as 2 accumulated batches of 8: same loss and gradient scale."""
    from tasks.modelling.train import train_model

    fixed = ["training.max_steps=1", "training.logging_steps=1", "training.group_by_length=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    # trial=True: no checkpoint or model to write, only the logged history matters here.
    train_model(clean_ref, tiny(tmp_path, *fixed, "training.train_batch_size=16"), one, trial=True)
    train_model(
        clean_ref,
        tiny(tmp_path, *fixed, "training.train_batch_size=8", "training.gradient_accumulation_steps=2"),
        two,
        trial=True,
    )
    (_, loss_1), (_, loss_2) = logged(one, "loss")[0], logged(two, "loss")[0]
    (_, norm_1), (_, norm_2) = logged(one, "grad_norm")[0], logged(two, "grad_norm")[0]
    # Same 16 examples (random sampler, same seed); only dropout masks differ. Without the
    # scaling, the accumulated loss and gradient would be twice as large.
    assert abs(loss_1 - math.log(2)) < 0.2 and abs(loss_2 - loss_1) < 0.1
    assert 0.75 < norm_2 / norm_1 < 1.33


def test_sum_reduction_divided_by_item_count_is_the_mean():
    import torch

    from tasks.modelling.losses import compute_loss

    logits, labels = torch.randn(2, 5, 3), torch.tensor([[0, 2, -100, 1, -100], [1, 1, 0, -100, -100]])
    total = compute_loss("ner", "cross_entropy", logits, labels, reduction="sum")
    assert (total / 6).item() == pytest.approx(compute_loss("ner", "auto", logits, labels).item(), rel=1e-6)
    preds, targets = torch.randn(4, 1), torch.randn(4)
    assert (compute_loss("regression", "mse", preds, targets, reduction="sum") / 4).item() == pytest.approx(
        compute_loss("regression", "mse", preds, targets).item(), rel=1e-6
    )


def test_search_space_is_validated_and_sampled_with_field_types():
    import optuna

    from tasks.config import ConfigError, load_config
    from tasks.modelling.search import search_objective, suggest_values

    with pytest.raises(ConfigError, match="not training fields.*learning_rate"):
        load_config(None, ["search.space={lr: {low: 1.0e-5, high: 1.0e-4}}"])
    with pytest.raises(ConfigError, match="either a non-empty `choices`"):
        load_config(None, ["search.space={epochs: {low: 1, high: 3, choices: [1, 2]}}"])
    cfg = load_config(
        None,
        [
            "search.space={learning_rate: {low: 1.0e-5, high: 1.0e-4, log: true}, "
            "train_batch_size: {low: 8, high: 32}, scheduler: {choices: [linear, cosine]}}"
        ],
    )
    values = suggest_values(
        optuna.trial.FixedTrial({"learning_rate": 3e-5, "train_batch_size": 16, "scheduler": "cosine"}),
        cfg.search.space,
    )
    assert values == {"learning_rate": 3e-5, "train_batch_size": 16, "scheduler": "cosine"}
    assert isinstance(values["train_batch_size"], int)
    assert search_objective(cfg) == ("f1", "maximize")
    assert search_objective(load_config(None, ["search.metric=loss"])) == ("loss", "minimize")


def make_trainer(cfg, tmp: Path):
    from transformers import AutoModelForSequenceClassification

    from tasks.modelling.encode import resolve_model_path
    from tasks.modelling.trainer import loss_spec_for, make_trainer_class, training_arguments

    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path("minilm"), num_labels=2)
    # The arguments evaluate per epoch, which needs an eval set to exist; it is never used here.
    return make_trainer_class()(
        model=model,
        args=training_arguments(cfg, tmp),
        eval_dataset=[{}],
        loss_spec=loss_spec_for(cfg, ["a", "b"], [0, 1]),
        optimizer_name=cfg.training.optimizer,
    )


def learning_rates(trainer, steps: int) -> list[float]:
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return rates


def test_optimizers_and_schedules_follow_the_config(tmp_path):
    import torch

    base = ["training.learning_rate=1e-4", "training.warmup_ratio=0.2", "training.weight_decay=0.01"]
    adamw = make_trainer(tiny(tmp_path, *base), tmp_path)
    lr = learning_rates(adamw, 10)
    assert isinstance(adamw.optimizer, torch.optim.AdamW)
    assert lr[:3] == pytest.approx([0.0, 5e-5, 1e-4]) and lr[-1] == pytest.approx(1e-4 / 8)  # warm-up, decay

    adam = make_trainer(tiny(tmp_path, *base, "training.optimizer=adam", "training.scheduler=cosine"), tmp_path)
    lr = learning_rates(adam, 10)
    assert type(adam.optimizer) is torch.optim.Adam
    assert not adam.optimizer.param_groups[0].get("decoupled_weight_decay", False)  # classic L2
    assert {g["weight_decay"] for g in adam.optimizer.param_groups} == {0.01, 0.0}  # no decay on bias/LayerNorm
    assert lr[2] == pytest.approx(1e-4) and lr[6] == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))

    constant = make_trainer(tiny(tmp_path, *base, "training.scheduler=constant"), tmp_path)
    assert learning_rates(constant, 10)[2:] == pytest.approx([1e-4] * 8)


def test_auto_precision_takes_bf16_only_where_the_gpu_runs_it_natively(monkeypatch):
    import torch

    from tasks.modelling.precision import pick_precision

    # The GPU's two answers are stood in for, so this holds with or without one. A T4 or V100 runs bf16 only emulated.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert pick_precision("auto", use_cpu=False) == {"bf16": False, "fp16": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100, H100
    assert pick_precision("auto", use_cpu=False) == {"bf16": True, "fp16": False}


def cpuinfo_flags() -> set[str]:
    """The CPU flags as Linux lists them: a reference independent of torch's own check."""
    info = Path("/proc/cpuinfo")
    assert info.is_file(), "the project's machines are Linux: /proc/cpuinfo is the independent reference"
    return next(
        (set(line.split(":", 1)[1].split()) for line in info.read_text().splitlines() if line.startswith("flags")),
        set(),
    )


def test_auto_precision_on_cpu_follows_the_cpu_flags():
    """auto on CPU: bf16 autocast where the CPU lists AMX-BF16 or AVX512-BF16, fp32 elsewhere; fp32 turns it off."""
    from tasks.modelling.precision import cpu_runs_bf16_natively, pick_precision
    from tasks.modelling.trainer import training_arguments

    native = bool({"amx_bf16", "avx512_bf16"} & cpuinfo_flags())
    assert cpu_runs_bf16_natively() == native
    # use_cpu: the CPU's answer, also on a machine with a GPU.
    assert pick_precision("auto", use_cpu=True) == {"bf16": native, "fp16": False}
    off = {"bf16": False, "fp16": False}
    assert pick_precision("fp32", use_cpu=True) == pick_precision("no", use_cpu=True) == off
    assert pick_precision("fp16", use_cpu=True) == off  # no fp16 kernels nor loss scaler on CPU
    assert pick_precision("bf16", use_cpu=True) == {"bf16": True, "fp16": False}  # forced: emulated if need be
    args = training_arguments(
        tiny(
            Path("/tmp"), "training.use_cpu=true", "training.max_grad_norm=0.5", "training.gradient_checkpointing=true"
        ),
        Path("/tmp/unused"),
    )
    assert args.bf16 == native and not args.fp16 and args.use_cpu
    assert args.max_grad_norm == 0.5 and args.activation_checkpointing
    assert args.train_sampling_strategy == "group_by_length" and not args.average_tokens_across_devices


def test_cpu_bf16_check_reads_torch_then_the_cpu_flags(monkeypatch):
    import torch

    from tasks.modelling.precision import cpu_flags, cpu_runs_bf16_natively, pick_precision

    assert not cpu_runs_bf16_natively({"avx2", "avx512f", "avx512_vnni"})  # Cascade Lake, Zen 3: fp32
    assert cpu_runs_bf16_natively({"avx512f", "avx512_bf16"}) and cpu_runs_bf16_natively({"amx_bf16"})
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "amx_bf16": False})
    assert pick_precision("auto", use_cpu=True) == {"bf16": False, "fp16": False}
    monkeypatch.delattr(torch.cpu, "get_capabilities")  # an older torch: /proc/cpuinfo answers
    assert cpu_flags() == (cpuinfo_flags() if Path("/proc/cpuinfo").is_file() else set())


def test_bf16_training_keeps_fp32_weights_and_onnx_parity(clean_ref, tmp_path):
    """bf16 autocast runs the matrix products in bf16, but the saved weights are fp32 and the ONNX graph matches them."""
    import torch
    from safetensors import safe_open
    from transformers import TrainerCallback

    from tasks.modelling.export import export_model
    from tasks.modelling.train import train_model

    seen: set = set()

    class WatchMatmuls(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            first = model.bert.encoder.layer[0].attention.self.query
            first.register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))

    cfg = tiny(tmp_path, "training.mixed_precision=bf16", "training.max_steps=3", "training.use_cpu=true")
    trained = train_model(clean_ref, cfg, tmp_path / "run", callbacks=[WatchMatmuls()])
    assert torch.bfloat16 in seen and trained.summary["precision"] == "bf16"  # autocast was on while training
    with safe_open(Path(trained.model_dir) / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}  # noqa: SIM118  (safe_open is not iterable)
    exported = export_model(trained.model_dir, clean_ref, cfg, tmp_path / "run")
    assert exported.parity["passed"] and exported.parity["max_abs_diff"] < 1e-4


def test_max_length_beyond_the_model_is_refused_before_training(tmp_path):
    from tasks.modelling.model import build_model

    with pytest.raises(ValueError, match=r"model.max_length = 1024 .*\(512 positions\); set model.max_length to 512"):
        build_model(tiny(tmp_path, "model.max_length=1024"), ["negative", "positive"])


def test_position_limit_follows_the_architecture():
    from types import SimpleNamespace as Config

    from tasks.modelling.model import position_limit

    assert position_limit(Config(max_position_embeddings=512, model_type="bert")) == 512
    assert position_limit(Config(max_position_embeddings=514, model_type="roberta")) == 512
    assert (
        position_limit(Config(max_position_embeddings=512, model_type="deberta-v2", position_biased_input=False))
        is None
    )  # relative positions only


def test_early_stopping_stops_and_keeps_the_best_checkpoint(clean_ref, tmp_path):
    from tasks.modelling.train import train_model

    # A learning rate this small cannot change predictions: no evaluation improves on the first.
    cfg = tiny(
        tmp_path,
        "training.learning_rate=1e-12",
        "training.max_steps=6",
        "training.eval_steps=1",
        "training.early_stopping_patience=1",
        "training.metric_for_best_model=accuracy",
    )
    summary = train_model(clean_ref, cfg, tmp_path / "run").summary
    assert summary["global_step"] == 2  # evaluated at 1 (best) and 2 (no better): stopped, not 6
    assert summary["best_checkpoint"].endswith("checkpoint-1") and Path(summary["best_checkpoint"]).is_dir()
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    # Re-run (a flow resumed after a later stage failed): the Trainer would clear the stop and go on to step 3.
    again = train_model(clean_ref, cfg, tmp_path / "run").summary
    assert again["reused"] and again["global_step"] == 2


class Interrupted(RuntimeError):
    pass


def interrupt_after_save(step: int):
    """A callback that stops training like a killed process would, right after the checkpoint of `step`."""
    from transformers import TrainerCallback

    class InterruptAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= step:
                raise Interrupted(f"interrupted after step {state.global_step}")

    return InterruptAfterSave()


def test_resume_continues_from_the_last_checkpoint(clean_ref, tmp_path):
    from tasks.modelling.train import train_model

    run = tmp_path / "run"
    cfg = tiny(tmp_path, "training.max_steps=4", "training.eval_steps=2", "training.logging_steps=1")
    with pytest.raises(Interrupted):
        train_model(clean_ref, cfg, run, callbacks=[interrupt_after_save(2)])
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (run / "model").exists()

    summary = train_model(clean_ref, cfg, run).summary
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["resumed_at_step"] == 2
    assert summary["global_step"] == 4
    steps = [s for s, _ in logged(run, "loss")]
    assert steps == [1, 2, 3, 4]  # history carried over, then steps 3 and 4 only: no restart from 0
    assert (run / "model" / "model.safetensors").exists()

    # Finished: a further re-run (a flow resumed after a later stage failed) reuses the model, trains nothing.
    again = train_model(clean_ref, cfg, run).summary
    assert again["reused"] and again["global_step"] == 4 and [s for s, _ in logged(run, "loss")] == steps

    changed = dataclasses.replace(clean_ref, digest="another-dataset")
    with pytest.raises(ValueError, match="different data"):
        train_model(changed, cfg, run)


def test_search_runs_nested_trials_then_trains_with_the_best(clean_ref, tmp_path):
    from tasks.io import read_json
    from tasks.modelling.search import tune_and_train
    from tasks.platform import tracking

    cfg = tiny(
        tmp_path,
        "training.max_steps=2",
        "search.trials=2",
        "search.space={learning_rate: {low: 1.0e-5, high: 1.0e-4, log: true}, train_batch_size: {choices: [8, 16]}}",
    )
    parent = tracking.start_run("tests-search", "search-parent")
    result = tune_and_train(clean_ref, cfg, tmp_path / "run", parent)
    found = result.search
    assert found["metric"] == "f1" and found["direction"] == "maximize"
    assert [t["state"] for t in found["trials"]] == ["COMPLETE", "COMPLETE"]

    c = tracking.client()
    children = c.search_runs(
        [c.get_run(parent).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.info.run_id for r in children} == {t["mlflow_run_id"] for t in found["trials"]}
    assert all("val_f1" in r.data.metrics and "training.learning_rate" in r.data.params for r in children)

    used = read_json(Path(result.model_dir) / "finetune_flow.json")["training"]
    assert used["learning_rate"] == found["best_params"]["learning_rate"]
    assert used["train_batch_size"] == found["best_params"]["train_batch_size"]
    assert float(c.get_run(parent).data.params["search.best.learning_rate"]) == pytest.approx(used["learning_rate"])
    assert not list((tmp_path / "run" / "search").glob("trial-*/checkpoints/checkpoint-*"))  # trials save no weights


def test_pruning_stops_a_trial_below_the_median_of_earlier_ones():
    import optuna

    from tasks.config import load_config
    from tasks.modelling.search import make_pruner, make_pruning_callback

    study = optuna.create_study(direction="maximize", pruner=make_pruner(load_config(None, [])))
    for score in (0.80, 0.82):  # two finished trials: the median after the first evaluation is 0.81
        t = study.ask()
        t.report(score, 1)
        study.tell(t, score)
    good, bad = study.ask(), study.ask()
    make_pruning_callback(good, "accuracy").on_evaluate(None, None, None, metrics={"eval_accuracy": 0.9})
    with pytest.raises(optuna.TrialPruned, match=r"accuracy=0.7000 after evaluation 1"):
        make_pruning_callback(bad, "accuracy").on_evaluate(None, None, None, metrics={"eval_accuracy": 0.7})
    off = make_pruner(load_config(None, ["search.prune=false"]))
    assert isinstance(off, optuna.pruners.NopPruner)


def test_a_pruned_trial_stops_training_and_its_run_says_so(clean_ref, tmp_path):
    import optuna

    from tasks.modelling.search import run_trial
    from tasks.platform import tracking

    class PruneAtOnce(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    trial = optuna.create_study(direction="maximize", pruner=PruneAtOnce()).ask()
    cfg = tiny(tmp_path, "training.max_steps=4", "training.eval_steps=1", "search.trials=1")
    parent = tracking.start_run("tests-search", "prune-parent")
    with pytest.raises(optuna.TrialPruned, match="after evaluation 1"):
        run_trial(trial, clean_ref, cfg, tmp_path / "run", parent, "f1")
    child = tracking.client().get_run(trial.user_attrs["mlflow_run_id"])
    assert child.info.status == "FINISHED" and "after evaluation 1" in child.data.tags["optuna_pruned"]
    assert [m.step for m in tracking.client().get_metric_history(child.info.run_id, "val_f1")] == [1]  # stopped at 1


def test_distributed_two_processes_log_once_and_keep_the_loss_scale(clean_ref, tmp_path):
    from tasks.modelling.train import train_model
    from tasks.platform import tracking

    run_id = tracking.start_run("tests-ddp", "ddp")
    # use_cpu: two gloo ranks on any machine (two NCCL ranks would need two GPUs; one-GPU machines refuse them).
    cfg = tiny(
        tmp_path,
        "training.distributed.nproc_per_node=2",
        "training.max_steps=2",
        "training.logging_steps=1",
        "training.train_batch_size=8",
        "training.use_cpu=true",
    )
    summary = train_model(clean_ref, cfg, tmp_path / "run", run_id).summary
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    first_loss = logged(tmp_path / "run", "loss")[0][1]
    # A fresh binary head starts near ln 2; a loss multiplied by the world size would be near 1.39.
    assert abs(first_loss - math.log(2)) < 0.25
    history = tracking.client().get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]  # rank 0 alone logged
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_cli_resume_from_continues_the_same_run(flow_result, capsys):
    """`ftflow run --resume-from RUN` reuses the run folder, its config and its MLflow run; a finished training is not redone."""
    from flows.ops.cli import main
    from tasks.platform import tracking

    first = flow_result["result"]
    run_dir = Path(first["run_dir"])
    steps_before = json.loads((run_dir / "train_summary.json").read_text())["global_step"]
    reg = first["registered"]
    versions_before = len(tracking.client().search_model_versions(f"name = '{reg['name']}'"))
    # No config given: the run's own config.yaml.
    assert main(["run", "--resume-from", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert first["run_id"] in out
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["global_step"] == steps_before  # training had finished: its model is reused, nothing redone
    run = tracking.client().get_run(first["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["training_reused"] == "true"
    # The same run's model registers once: the resumed run finds its version instead of adding one.
    assert f"registered:   {reg['name']} version {reg['version']} " in out
    assert len(tracking.client().search_model_versions(f"name = '{reg['name']}'")) == versions_before


def test_resume_with_a_different_training_config_is_refused(flow_result):
    from flows.training import check_resume_config

    run_dir = Path(flow_result["result"]["run_dir"])
    cfg = flow_result["config"]
    changed = cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 1e-3})})
    check_resume_config(
        cfg.model_copy(update={"export": cfg.export.model_copy(update={"enabled": False})}), cfg, run_dir
    )
    with pytest.raises(ValueError, match=r"training.learning_rate.*--resume-from"):
        check_resume_config(changed, cfg, run_dir)
