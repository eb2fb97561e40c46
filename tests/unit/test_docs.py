"""The generated reference pages of the docs site list every config field and every `ftflow` command.

The paths are found here by a walk of their own over the pydantic models and the argparse parser,
not by the generator's, so a field or command the generator skipped fails the test.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from docs import gen_ref
from flows.ops.cli import build_parser
from tasks.config import PipelineConfig


def _models_in(annotation, path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield path, annotation
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, path)
    elif origin is list:
        yield from _models_in(args[0], f"{path}[]")
    elif origin is dict:
        yield from _models_in(args[1], f"{path}.<key>")


def config_paths(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for sub_path, sub_model in _models_in(info.annotation, path):
            yield from config_paths(sub_model, f"{sub_path}.")


@pytest.fixture(scope="module")
def config_page() -> str:
    return gen_ref.config_reference()


@pytest.fixture(scope="module")
def cli_page() -> str:
    return gen_ref.cli_reference()


def test_every_config_field_has_a_row(config_page):
    paths = list(dict.fromkeys(config_paths()))
    assert len(paths) > 100  # the walk reached the sections, not only the top level
    # fields inside a list, a map and a union of sections are reached too
    assert {"data.extra_sources[].kind", "search.space.<key>.low", "decision.threshold.min_precision"} <= set(paths)
    missing = [p for p in paths if f"| `{p}` |" not in config_page]
    assert not missing, f"fields missing from the configuration reference: {missing}"


def test_a_row_carries_the_type_default_and_description(config_page):
    info = PipelineConfig.model_fields["training"].annotation.model_fields["learning_rate"]
    row = next(line for line in config_page.splitlines() if line.startswith("| `training.learning_rate` |"))
    assert "`float`" in row and "`5.0e-05`" in row and info.description in row and "> 0" in row
    row = next(line for line in config_page.splitlines() if line.startswith("| `data.task` |"))
    assert "`classification` or `pair_classification` or `regression` or `ner`" in row


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subcommands(sub).items()})
    return found


def test_every_ftflow_command_has_its_help(cli_page):
    commands = _subcommands(build_parser())
    assert {"run", "validate", "up", "promote", "rollback", "history", "serve", "monitor", "score"} <= set(commands)
    for name, parser in commands.items():
        assert f"## `ftflow {name}`" in cli_page, f"ftflow {name} is missing from the CLI reference"
        options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
        absent = [o for o in options if o not in cli_page]
        assert not absent, f"options of ftflow {name} missing from the CLI reference: {absent}"
