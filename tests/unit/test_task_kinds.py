"""Task kinds are objects: nothing outside tasks/kinds names a kind, the kinds say what the tables said,
and a kind the code was not written for is refused instead of answered as a single-label classifier."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest

from tasks.kinds import TaskKind, UnknownTaskKind, UnsupportedTaskKind, kind_of, known_kinds, register_kind
from tasks.kinds import unregister_kind as forget_kind
from tasks.kinds.decision import softmax

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tasks", "flows", "deploy")
KINDS_DIR = ROOT / "tasks" / "kinds"
NAMES = frozenset(known_kinds())


# --- no task literal outside the kinds ----------------------------------------------------------------


def _names_in(node: ast.AST) -> list[str]:
    """Kind names a node spells: a string constant, or one inside a tuple, list or set."""
    if isinstance(node, ast.Constant) and node.value in NAMES:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for elt in node.elts for n in _names_in(elt)]
    return []


def _is_literal_type(node: ast.Subscript) -> bool:
    """`Literal[...]`: a type spelling the names as data (the config's TaskName), not a branch."""
    return (isinstance(node.value, ast.Name) and node.value.id == "Literal") or (
        isinstance(node.value, ast.Attribute) and node.value.attr == "Literal"
    )


def find_kind_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every place a module branches on, dispatches by or lists a kind's name.

    Compare operands (`task == "ner"`, `task in ("classification", ...)`), dict keys (a dispatch table),
    match cases, and tuples/lists/sets of names (a second list of kinds); a `Literal[...]` is data.
    """
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and _is_literal_type(node)
        for n in ast.walk(node.slice)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found += [(node.lineno, f"compares with '{n}'") for n in _names_in(operand)]
        elif isinstance(node, ast.Dict):
            found += [
                (node.lineno, f"dict keyed by '{k.value}'")
                for k in node.keys
                if isinstance(k, ast.Constant) and k.value in NAMES
            ]
        elif isinstance(node, ast.MatchValue):
            found += [(node.lineno, f"match case '{n}'") for n in _names_in(node.value)]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            names = _names_in(node)
            if names:
                found.append((node.lineno, f"lists {names}"))
    return sorted(set(found))


def _modules() -> list[Path]:
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py") if KINDS_DIR not in p.parents)


def test_no_module_outside_the_kinds_branches_on_a_task_name():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in _modules()
        for line, what in find_kind_literals(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, "ask the kind (tasks.kinds.kind_of(task).<question>) instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        'if task == "ner": pass',
        'x = 1 if "regression" != task else 2',
        'ok = task in ("classification", "pair_classification")',
        'ok = task not in ["ner"]',
        'cls = {"classification": A, "ner": B}[task]',
        'match task:\n    case "regression": pass',
        'CALIBRATED = ("classification", "pair_classification")',
    ],
)
def test_the_scan_finds_each_way_of_branching_on_a_name(source):
    assert find_kind_literals(ast.parse(source))


def test_the_scan_leaves_data_alone():
    quiet = 'TaskName = Literal["classification", "ner"]\nproblem_type = "regression"\ndef f(task="ner"): pass'
    assert find_kind_literals(ast.parse(quiet)) == []


# --- the registry -------------------------------------------------------------------------------------


def test_an_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(UnknownTaskKind, match="unknown task 'summarisation'") as e:
        kind_of("summarisation")
    assert all(name in str(e.value) for name in ("classification", "pair_classification", "regression", "ner"))
    assert isinstance(e.value, ValueError)  # callers that caught the old ValueError still do


def test_the_config_literal_names_the_registered_kinds():
    from tasks.config import TaskName

    assert get_args(TaskName) == known_kinds()


def test_every_kind_has_one_answer_shape_and_an_expectation_suite():
    for name in known_kinds():
        kind = kind_of(name)
        assert kind_of(kind) is kind and kind.name == name
        shapes = [kind.is_single_label, kind.predicts_value, kind.is_token_level, kind.is_multi_label]
        assert shapes.count(True) == 1, name
        suite = ROOT / "expectations" / kind.expectation_suite
        assert suite.is_file() and json.loads(suite.read_text())["expectations"], name
    assert {p.stem for p in (ROOT / "expectations").glob("*.json")} == set(known_kinds())


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_kind(kind_of("ner"))


# --- the kinds say what the tables said (values copied from the tables they replace) ------------------

# labels.LOSSES_FOR_TASK, metrics._PRIMARY, calibration.CALIBRATED_TASKS, config.data.UNCAPPED_TASKS,
# baselines.BASELINE_TASKS, confidence.interval_metrics, model.build_model's head, clean's augment and conflict
# rules, the pair check, trainer's class-weight skew rule: one row per rule, as they read before the kinds.
ORDER = ("classification", "pair_classification", "regression", "ner")
CE = ("auto", "cross_entropy", "focal")
SINGLE = "single_label_classification"
BEFORE: dict[str, tuple[Any, ...]] = {  # what: its value for each kind in ORDER
    "losses": (CE, CE, ("auto", "mse"), CE),
    "auto": ("cross_entropy", "cross_entropy", "mse", "cross_entropy"),
    "primary": ("f1", "f1", "pearson", "f1"),
    "calibrated": (True, True, False, False),
    "uncapped": (True, False, True, False),
    "baselines": (True, True, True, False),
    "intervals": (("f1", "accuracy"), ("f1", "accuracy"), ("pearson",), ("f1",)),
    "problem_type": (SINGLE, SINGLE, "regression", None),
    "augments": (True, False, True, False),
    "conflicts": (True, True, False, True),
    "pairs": (False, True, False, False),
    "skew": (True, True, False, False),
}
INTENDED_USE_BEFORE = {
    "classification": "Assigning one of the labels above to a short English text like the training data.",
    "pair_classification": "Deciding the relation (one of the labels above) between two short English texts, "
    "such as whether they are paraphrases.",
    "regression": "Scoring a short English text on the training data's numeric scale.",
    "ner": "Tagging entity mentions (the types above) in short English texts like the training data, "
    "word by word, with BIO tags.",
}


@pytest.mark.parametrize("name", ORDER)
def test_each_kind_keeps_the_values_the_tables_held(name):
    from tasks.config import char_cap
    from tasks.modelling.losses import resolve_loss_name
    from tasks.modelling.metrics import primary_metric

    kind, was = kind_of(name), {what: values[ORDER.index(name)] for what, values in BEFORE.items()}
    assert kind.losses == was["losses"] and resolve_loss_name(name, "auto") == was["auto"]
    assert primary_metric(name) == was["primary"]
    assert kind.calibrated == was["calibrated"] and kind.uncapped == was["uncapped"]
    assert char_cap(None, name) == (None if was["uncapped"] else 10_000)
    assert kind.has_baselines == was["baselines"] and kind.interval_metrics == was["intervals"]
    assert kind.problem_type == was["problem_type"] and kind.augments == was["augments"]
    assert kind.has_labels == was["conflicts"] and kind.reads_pairs == was["pairs"]
    assert kind.skew_weighted == was["skew"]
    assert kind.num_labels(["a", "b", "c"]) == (1 if name == "regression" else 3)
    assert kind.intended_use == INTENDED_USE_BEFORE[name]


# --- a kind the code was not written for --------------------------------------------------------------


class MadeUpKind(TaskKind):
    """Multi-label-like: sigmoid per label, several labels per text. No shape flag: no code knows it yet."""

    def decode(self, logits, labels, decision):
        probs = 1 / (1 + np.exp(-np.stack(logits)))
        return (probs >= 0.5).astype(np.int64), probs

    def confidence(self, predictions, probabilities) -> list[float | None]:
        return probabilities.max(-1).tolist()

    def answers(self, predictions, labels) -> list:
        return [[labels[i] for i in np.flatnonzero(row)] for row in predictions]


MADE_UP = "made_up_multi_label"


@pytest.fixture
def made_up():
    kind = register_kind(MadeUpKind(name=MADE_UP, losses=("auto", "bce"), default_loss="bce", primary_metric="f1"))
    yield kind
    forget_kind(MADE_UP)


def _scores(task: str):
    from tasks.inference.decode import decode_logits

    return decode_logits(task, [np.array([2.0, -1.0]), np.array([0.5, 3.0])], ["a", "b"])


def test_a_registered_kind_is_known_and_decodes_with_its_own_rule(made_up):
    assert kind_of(MADE_UP) is made_up and MADE_UP in known_kinds()
    scores = _scores(MADE_UP)
    assert scores.answers() == [["a"], ["a", "b"]]
    np.testing.assert_allclose(scores.confidence(), [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-3.0))])
    assert softmax(np.zeros(2)).tolist() == [0.5, 0.5]


def test_a_made_up_kind_cannot_slip_through_the_single_label_paths(made_up):
    from tasks.config import DataConfig, PipelineConfig
    from tasks.data.clean import clean_frame, resolve_labels
    from tasks.inference.compare import compare_answers
    from tasks.inference.predictor import OnnxPredictor
    from tasks.modelling import evaluate
    from tasks.modelling.baselines import targets_of
    from tasks.modelling.confidence import bootstrap_interval
    from tasks.modelling.encode import encode_frame
    from tasks.modelling.metrics import compute_metrics_for, make_trainer_compute_metrics
    from tasks.modelling.model import build_model
    from tasks.monitoring.drift import compare_windows
    from tasks.score import assemble_output, labelled_metrics

    labels = ["a", "b"]
    frame = pd.DataFrame({"text": ["x y", "y z"], "label": ["a", "b"]})
    scored = {"predictions": [0, 1], "references": [0, 1], "confidence": [0.9, 0.8], "metrics": {}}
    data = DataConfig().model_copy(update={"task": MADE_UP})
    cfg = PipelineConfig().model_copy(update={"data": data})
    predictor = OnnxPredictor.__new__(OnnxPredictor)  # the answer-building step, without a bundle
    predictor.task, predictor.kind, predictor.labels = MADE_UP, made_up, labels
    predictor.score = lambda texts, pairs=None: replace(_scores(MADE_UP), truncated=np.zeros(2, bool))
    plan = SimpleNamespace(
        task=MADE_UP, labels=labels, frame=frame, model=SimpleNamespace(version="1"), references=frame["label"]
    )
    answers = [{"label": "a", "score": 0.9, "scores": {}, "truncated": False}] * 2
    calls = {
        "metrics": lambda: compute_metrics_for(MADE_UP, [0, 1], [0, 1], labels),
        "Trainer metrics": lambda: make_trainer_compute_metrics(MADE_UP, labels)(
            SimpleNamespace(predictions=np.zeros((2, 2)), label_ids=np.zeros(2))
        ),
        "model head": lambda: build_model(cfg, labels),
        "target encoding": lambda: encode_frame(None, frame, MADE_UP, labels, 16),
        "bootstrap": lambda: bootstrap_interval(MADE_UP, "f1", [0, 1], [0, 1]),
        "baselines": lambda: targets_of(frame, MADE_UP, labels),
        "prediction frame": lambda: evaluate.frame_of_predictions(frame, scored, MADE_UP, labels),
        "weak classes": lambda: evaluate.find_weak_classes(scored, MADE_UP, labels),
        "confusion": lambda: evaluate.confusion_inputs(scored, MADE_UP, labels),
        "class report": lambda: evaluate.write_class_report(scored, MADE_UP, labels, Path("unused.csv")),
        "comparison": lambda: compare_answers(_scores(MADE_UP), _scores(MADE_UP), 0.0),
        "service answer": lambda: predictor.predict(["x y", "y z"]),
        "batch output": lambda: assemble_output(plan, answers),
        "batch metrics": lambda: labelled_metrics(plan, frame.assign(prediction=["a", "b"])),
        "cleaning": lambda: clean_frame(frame, data),
        "label set": lambda: resolve_labels({"train": frame}, data),
        "drift": lambda: compare_windows(
            frame[["text"]].head(1).assign(prediction="a"),
            frame[["text"]].head(1).assign(prediction="b"),
            frozenset(),
            task=MADE_UP,
        ),
    }
    slipped = []
    for what, call in calls.items():
        try:
            call()
            slipped.append(what)
        except UnsupportedTaskKind:
            pass
    assert not slipped, f"a kind with no known answer shape went through: {slipped}"
