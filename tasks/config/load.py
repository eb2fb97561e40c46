"""Reading a config: a YAML preset (or the defaults), `key=value` overrides, errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tasks.config.base import ConfigError
from tasks.config.pipeline import PipelineConfig
from tasks.secrets import redact_text


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = redact_text(repr(value)) if not isinstance(value, dict) else "{...}"
        if e["type"] == "extra_forbidden":
            # Its value is not repeated: a mistyped `pasword:` would print the password.
            lines.append(f"  - {where}: unknown field; check the spelling")
        else:
            lines.append(f"  - {where} = {shown}: {e['msg']}")
    return "\n".join(lines)


def _parse_value(raw: str) -> Any:
    # YAML rules give numbers, booleans, null and lists from the command line.
    return yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` overrides onto a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not key=value, e.g. --set training.epochs=2")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = _parse_value(raw)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML preset (or the defaults), apply overrides, validate."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists():
            presets = sorted(x.stem for x in Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml"))
            raise ConfigError(f"config file '{path}' does not exist; presets in configs/: {', '.join(presets)}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping of sections, got {type(data).__name__}")
        origin = str(path)
    data = apply_overrides(data, overrides or [])
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None


def flatten_config(cfg: PipelineConfig) -> dict[str, Any]:
    """`section.key -> value` pairs, for logging as run parameters."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = node

    walk("", cfg.model_dump(mode="json"))
    return out
