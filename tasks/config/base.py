"""What every config section shares: the strict base model, the error type, the safe-name rule."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# Names that become folder names, run names and MLflow names: nothing that could leave run_dir.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(value: str, field: str) -> str:
    """`value` when it is a safe name (letters, digits, '.', '_', '-'; starts with a letter or digit)."""
    if not NAME_PATTERN.fullmatch(value or ""):
        raise ValueError(
            f"{field} {value!r} may hold only letters, digits, '.', '_' and '-' (starting with a "
            f"letter or digit, at most 128), so it cannot name a path outside run_dir; e.g. 'my-model.v2'"
        )
    return value


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field, the value and what is allowed."""


class Section(BaseModel):
    """The base of every config section: strict about keys, validated on assignment."""

    # Unknown keys are typos far more often than intent: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
