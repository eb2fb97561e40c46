"""Label and tag rules: one home, and every stage reads a tag the way training does."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from tasks.config import load_config
from tasks.data.clean import clean_frame, resolve_labels
from tasks.inference.decode import entities_of
from tasks.kinds import kind_of, known_kinds
from tasks.labels import (
    IGNORE_INDEX,
    entity_type,
    entity_types,
    find_bio_break,
    inside_tag,
    is_bio_tag,
    opens_entity,
    outside_id,
    tag_set,
)
from tasks.modelling.encode import align_word_labels
from tasks.modelling.evaluate import confusion_inputs


def test_bio_tags_are_iob2_only():
    assert all(is_bio_tag(t) for t in ["O", "B-PER", "I-PER", "B-x-y"])
    # Behaviour pinned when the six copies became one: IOBES/BILOU prefixes and "_" separators
    # are not tags training accepts (clean quarantines them), so metrics and evaluation no
    # longer read "E-PER" or "B_PER" as naming the type PER.
    for tag in ["E-PER", "S-PER", "U-PER", "B_PER", "B-", "o", "PER"]:
        assert not is_bio_tag(tag)
    assert entity_types(["O", "S-PER", "B_LOC", "E-ORG", "I-MISC", "B-PER"]) == ["MISC", "PER"]
    assert entity_type("E-ORG") == "E-ORG"
    assert entity_type("O") == "O"


def test_clean_quarantines_tags_outside_the_rule_and_builds_the_tag_set_from_it():
    cfg = load_config(None, ["data.task=ner", "data.splits.test_fraction=0", "data.splits.validation_fraction=0"])
    raw = pd.DataFrame(
        {
            "tokens": [["Ann", "runs"], ["Bob", "jogs"], ["Cy", "Dee"]],
            "tags": [["B-PER", "O"], ["S-PER", "O"], ["B-LOC", "I-LOC"]],
        }
    )
    splits, quarantine, _ = clean_frame(raw, cfg.data)
    assert quarantine["reason"].tolist() == ["invalid_bio_tag"]
    assert resolve_labels(splits, cfg.data) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert tag_set(["PER", "LOC", "PER"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_evaluation_and_metrics_name_the_same_entity_types():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    scored = {"references": [["B-PER", "I-PER", "O"]], "predictions": [["B-LOC", "O", "O"]]}
    refs, preds, names = confusion_inputs(scored, "ner", labels)
    assert names == ["O", "PER", "LOC"]
    assert [names[i] for i in refs] == ["PER", "PER", "O"]
    assert [names[i] for i in preds] == ["LOC", "O", "O"]
    assert entity_types(labels) == ["PER", "LOC"]


def test_served_entities_match_seqeval_entities_on_random_tag_sequences():
    # seqeval (default mode) is what the metrics count; the service must group words the same way.
    rng = random.Random(7)
    pool = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for _ in range(300):
        tags = [rng.choice(pool) for _ in range(rng.randint(1, 8))]
        words = [f"w{i}" for i in range(len(tags))]
        text = " ".join(words)
        spans, start = [], 0
        for w in words:
            spans.append((start, start + len(w)))
            start += len(w) + 1
        served = entities_of(text, spans, tags, np.full((len(tags), len(pool)), 0.2))
        got = [
            (
                e["type"],
                words.index(text[e["start"] : e["end"]].split()[0]),
                words.index(text[e["start"] : e["end"]].split()[-1]),
            )
            for e in served
        ]
        assert got == get_entities(tags), tags


def test_bio_order_breaks_and_entity_openings():
    assert find_bio_break(["B-PER", "I-PER", "O", "B-LOC"]) is None
    assert find_bio_break(["O", "I-PER"]) == "I-PER after O at token 1"
    assert find_bio_break(["B-LOC", "I-PER"]) == "I-PER after B-LOC at token 1"
    assert opens_entity("I-PER", None) and opens_entity("I-PER", "LOC") and not opens_entity("I-PER", "PER")
    assert opens_entity("B-PER", "PER") and not opens_entity("O", None)


def test_sub_tokens_continue_their_word_with_the_inside_tag():
    labels = ["O", "B-PER", "I-PER", "B-LOC"]  # B-LOC without I-LOC: later pieces keep B-LOC
    label2id = {n: i for i, n in enumerate(labels)}
    inside_of = {i: label2id[inside_tag(n)] for n, i in label2id.items() if inside_tag(n) in label2id}
    assert inside_of == {1: 2}
    assert inside_tag("I-PER") is None and inside_tag("O") is None
    word_ids = [None, 0, 0, 1, 1, None]
    assert align_word_labels(word_ids, [1, 3], True, inside_of) == [IGNORE_INDEX, 1, 2, 3, 3, IGNORE_INDEX]
    assert align_word_labels(word_ids, [1, 3], False) == [IGNORE_INDEX, 1, IGNORE_INDEX, 3, IGNORE_INDEX, IGNORE_INDEX]
    assert outside_id(["B-PER", "I-PER", "O"]) == 2 and outside_id(["B-PER"]) == 0


@pytest.mark.parametrize("task", known_kinds())
def test_config_and_losses_read_the_one_loss_table(task):
    from tasks.modelling.losses import resolve_loss_name

    for loss in ("auto", "cross_entropy", "mse", "focal"):
        allowed = loss in kind_of(task).losses
        pair = ["data.text_pair_column=text_pair"] if kind_of(task).reads_pairs else []
        try:
            load_config(None, [f"data.task={task}", f"training.loss={loss}", *pair])
            refused = False
        except ValueError as e:  # other rules (class weights, label smoothing) do not count here
            refused = "does not fit" in str(e)
        assert refused != allowed, (task, loss)
        if allowed:
            assert resolve_loss_name(task, loss) in kind_of(task).losses
        else:
            with pytest.raises(ValueError, match="does not fit"):
                resolve_loss_name(task, loss)


def test_per_class_metric_keys_are_told_from_summaries():
    from tasks.labels import is_per_class_metric, label_keys

    keys = label_keys(["NUM:code", "macro", "spam", "ci"])  # "macro" becomes macro_1: never a summary's name
    per_class = [f"val_{m}_{k}" for m in ("precision", "recall", "f1", "support") for k in keys]
    per_class += [f"test_f1_{k}" for k in keys]
    assert all(is_per_class_metric(k) for k in per_class), [k for k in per_class if not is_per_class_metric(k)]
    summaries = [
        "val_loss",
        "val_accuracy",
        "val_f1",
        "val_f1_macro",
        "val_precision_macro",
        "val_recall_macro",
        "val_mcc",
        "test_f1_ci_low",
        "test_accuracy_ci_high",
        "train_loss",
        "val_pearson",
        "f1_micro",
    ]
    assert not any(is_per_class_metric(k) for k in summaries), [k for k in summaries if is_per_class_metric(k)]
