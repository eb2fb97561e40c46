"""The task kinds, one module each, and the registry that names them: `kind_of("ner")`.

Adding a kind: one module here (a TaskKind with its facts and decoding), registered below, its
expectation suite in expectations/<name>.json, and tests; code that branches on the answer shape
raises `UnsupportedTaskKind` until the new shape has its branch.
"""

from __future__ import annotations

from tasks.kinds.base import TaskKind, UnknownTaskKind, UnsupportedTaskKind
from tasks.kinds.classification import CLASSIFICATION, PAIR_CLASSIFICATION
from tasks.kinds.multi_label import MULTI_LABEL
from tasks.kinds.ner import NER
from tasks.kinds.regression import REGRESSION

_KINDS: dict[str, TaskKind] = {
    kind.name: kind for kind in (CLASSIFICATION, PAIR_CLASSIFICATION, REGRESSION, NER, MULTI_LABEL)
}


def known_kinds() -> tuple[str, ...]:
    """The registered kinds' names, in registration order."""
    return tuple(_KINDS)


def kind_of(task: str | TaskKind) -> TaskKind:
    """The kind named `task` (a kind is returned as it is); refuses an unknown name, listing the known ones."""
    if isinstance(task, TaskKind):
        return task
    try:
        return _KINDS[task]
    except KeyError:
        raise UnknownTaskKind(f"unknown task '{task}'; allowed: {', '.join(_KINDS)}") from None


def register_kind(kind: TaskKind) -> TaskKind:
    """Add a kind to the registry (a plugin's, or a test's); refuses a name already taken."""
    if kind.name in _KINDS:
        raise ValueError(f"task kind '{kind.name}' is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind added by register_kind (tests clean up with it)."""
    _KINDS.pop(name, None)


__all__ = [
    "TaskKind",
    "UnknownTaskKind",
    "UnsupportedTaskKind",
    "kind_of",
    "known_kinds",
    "register_kind",
    "unregister_kind",
]
