"""Feedback labels are read as the clean stage reads a label column: one class whatever the spelling."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.monitoring.feedback import check_label, spell_label


def logged(labels: list[str]) -> pd.Series:
    """A logged classifier answer as the prediction log holds it (probabilities as JSON)."""
    return pd.Series({"probabilities": json.dumps({k: 1 / len(labels) for k in labels}), "entities": None})


@pytest.mark.parametrize("label", [1, 1.0, "1", "1.0", " 1 "])
def test_a_number_is_its_class_whatever_its_spelling(label):
    answer = logged(["0", "1"])
    assert check_label(label, answer) is None and spell_label(label, answer) == "1"


def test_words_are_stripped_but_not_recased_and_unknown_labels_are_refused():
    answer = logged(["ham", "spam"])
    assert spell_label(" spam ", answer) == "spam" and check_label(" spam ", answer) is None
    assert "not one the model knows: ham, spam" in check_label("Spam", answer)
    assert "not one the model knows" in check_label(2, logged(["0", "1"]))
    assert "not one the model knows" in check_label(None, answer)


def test_a_declared_spelling_is_kept():
    answer = logged(["0.0", "1.0"])  # a model trained on labels spelled as floats knows them so
    assert spell_label("1.0", answer) == "1.0" and check_label(1.0, answer) is None
