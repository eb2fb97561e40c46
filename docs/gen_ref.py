"""The generated reference pages of the docs site: every config field, every `ftflow` command.

MkDocs runs this file as a hook (`hooks:` in mkdocs.yml). On each build it adds two pages that are
never written by hand, so they cannot drift from the code:

- `reference/config.md`: every field of `PipelineConfig` and of every section below it, found by
  walking `model_fields` recursively (into lists, dicts and unions of sections too), with its dotted
  path (what `--set` takes), type, default and description;
- `reference/cli.md`: `ftflow --help` and the `--help` of every subcommand, from the parser that
  `flows/ops/cli.py` builds.

`tests/unit/test_docs.py` imports `config_reference` and `cli_reference` and checks that no field
and no command is missing.
"""

from __future__ import annotations

import argparse
import inspect
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"
HELP_COLUMNS = "100"  # the width argparse wraps the help at, so the page does not depend on the terminal


# --- the configuration reference ---------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One field of a config section, at its dotted path from the root of `PipelineConfig`."""

    path: str
    info: FieldInfo
    sections: tuple[tuple[str, type[BaseModel]], ...]  # the sections it holds: (path of each, its model)


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _is_section(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, BaseModel)


def nested_sections(annotation: Any, path: str) -> list[tuple[str, type[BaseModel]]]:
    """The sections a field of this type holds, each with the path its fields live under.

    A section itself (or one of a union): `path`; the items of a list: `path[]`; the values of a
    dict: `path.<key>`.
    """
    tp = _unwrap(annotation)
    if _is_section(tp):
        return [(path, tp)]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return [found for arg in args for found in nested_sections(arg, path)]
    if origin in (list, tuple, set, frozenset) and args:
        return nested_sections(args[0], f"{path}[]")
    if origin is dict and len(args) == 2:
        return nested_sections(args[1], f"{path}.<key>")
    return []


def walk_fields(model: type[BaseModel], prefix: str = "") -> Iterator[Field]:
    """Every field of `model` and of every section below it, depth first, in declaration order."""
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        sections = tuple(nested_sections(info.annotation, path))
        yield Field(path, info, sections)
        for sub_path, sub_model in sections:
            yield from walk_fields(sub_model, f"{sub_path}.")


def _type_name(annotation: Any) -> str:
    tp = _unwrap(annotation)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " or ".join(f"`{yaml_value(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}" if len(args) == 2 else "map"
    if _is_section(tp):
        return f"section `{tp.__name__}`"
    return f"`{getattr(tp, '__name__', str(tp))}`"


_BOUNDS = {
    annotated_types.Gt: (">", "gt"),
    annotated_types.Ge: ("≥", "ge"),
    annotated_types.Lt: ("<", "lt"),
    annotated_types.Le: ("≤", "le"),
}


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for kind, (sign, attr) in _BOUNDS.items():
            if isinstance(meta, kind):
                parts.append(f"{sign} {yaml_value(getattr(meta, attr))}")
    return ", ".join(parts)


def yaml_value(value: Any) -> str:
    """A value as a YAML preset or `--set` writes it."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text.removesuffix("...").strip()


def default_text(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.get_default(call_default_factory=True, validated_data={})
    return f"`{yaml_value(value)}`"


def _cell(text: str) -> str:
    """Plain text safe inside a Markdown table cell (no column breaks, no HTML, no emphasis)."""
    for raw, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), ("*", "\\*"), ("\n", " ")):
        text = text.replace(raw, escaped)
    return text


def anchor(path: str, model: type[BaseModel] | None = None) -> str:
    """The id of a section's heading; a union of sections at one path gets one heading per model."""
    slug = path.replace(".", "-").replace("[]", "-items").replace("<key>", "key").replace("_", "-")
    return f"{slug}-{model.__name__.lower()}" if model is not None else slug


def _model_doc(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "").strip()


def _link(path: str, model: type[BaseModel], shared: bool) -> str:
    target = anchor(path, model if shared else None)
    return f"[`{path}`](#{target})" + (f" (`{model.__name__}`)" if shared else "")


def _table(fields: list[Field]) -> list[str]:
    lines = ["| field | type | default | description |", "|---|---|---|---|"]
    for f in fields:
        description = _cell(f.info.description or "")
        if f.sections:  # its fields follow under their own heading
            default = default_text(f.info) if f.info.default is None else "the fields below"
            shared = len(f.sections) > 1
            links = ", ".join(_link(p, m, shared) for p, m in f.sections)
            description = f"{description}; see {links}" if description else f"see {links}"
        else:
            default = default_text(f.info)
        bounds = _bounds(f.info)
        kind = _type_name(f.info.annotation) + (f" ({bounds})" if bounds else "")
        lines.append(f"| `{f.path}` | {kind} | {default} | {description} |")
    return lines


def _sections(model: type[BaseModel], path: str, heading_id: str, title: str) -> list[str]:
    """The heading and table of one section, then those of the sections below it."""
    fields = [
        Field(
            f"{path}.{name}" if path else name,
            info,
            tuple(nested_sections(info.annotation, f"{path}.{name}" if path else name)),
        )
        for name, info in model.model_fields.items()
    ]
    out = [f"## {title} {{#{heading_id}}}", ""]
    doc = _model_doc(model)
    out += [f"{doc} (`{model.__name__}`)" if doc else f"`{model.__name__}`", "", *_table(fields), ""]
    for f in fields:
        shared = len(f.sections) > 1
        for sub_path, sub_model in f.sections:
            title = f"`{sub_path}` as `{sub_model.__name__}`" if shared else f"`{sub_path}`"
            out += _sections(sub_model, sub_path, anchor(sub_path, sub_model if shared else None), title)
    return out


def config_reference() -> str:
    """The Markdown of the configuration reference page."""
    from tasks.config import PipelineConfig

    out = [
        "# Configuration reference",
        "",
        "Every field of `PipelineConfig` (`tasks/config/`), generated from the pydantic models each time the",
        "site is built, so it lists what the code accepts. A field's path is what `--set` takes and what a",
        "YAML preset nests: `--set training.epochs=2` is `training: {epochs: 2}`. Values are parsed as YAML.",
        "The defaults are the models'; the presets in `configs/` set their own values on top. A path with",
        "`[]` is a field of each item of a list (`data.extra_sources[].kind`); `<key>` stands for a key of a",
        "map (`search.space.<key>.low`, the key being a training field such as `learning_rate`).",
        "",
        "Unknown keys are refused (a typo is reported with its path, without its value), and a bad value is",
        "one error naming the field, the value and what is allowed.",
        "",
    ]
    return "\n".join(out + _sections(PipelineConfig, "", "top-level", "Top level"))


# --- the command-line reference ----------------------------------------------------------------


def commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """(words after `ftflow`, one-line help, parser) of every subcommand, depth first, as declared."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*prefix, name), helps.get(name, ""), sub
                yield from commands(sub, (*prefix, name))


def _help_text(parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        return parser.format_help().rstrip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def cli_reference() -> str:
    """The Markdown of the command-line reference page."""
    from flows.ops.cli import build_parser

    parser = build_parser()
    found = list(commands(parser))
    out = [
        "# Command-line reference",
        "",
        "The `--help` of `ftflow` and of each of its commands, generated from the parser that",
        "`flows/ops/cli.py` builds each time the site is built. `ftflow --help` answers without importing",
        "torch. Commands that fail print one `error:` line and the path of the full log.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    out += [f"| [`ftflow {' '.join(words)}`](#{'-'.join(words)}) | {_cell(text)} |" for words, text, _ in found]
    out += ["", "## `ftflow` {#ftflow}", "", "```text", _help_text(parser), "```", ""]
    for words, _, sub in found:
        out += [f"## `ftflow {' '.join(words)}` {{#{'-'.join(words)}}}", "", "```text", _help_text(sub), "```", ""]
    return "\n".join(out)


# --- the MkDocs hook ---------------------------------------------------------------------------


def on_files(files, config):
    """Add the generated pages to the build (MkDocs 1.6 `File.generated`; nothing written to docs/)."""
    from mkdocs.structure.files import File

    for page, render in ((CONFIG_PAGE, config_reference), (CLI_PAGE, cli_reference)):
        files.append(File.generated(config, page, content=render()))
    return files
