"""Named presets: a table of field overrides applied to a config dataclass."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional, TypeVar

from .errors import UserError

T = TypeVar("T")


def apply_preset(cfg: T, table: dict[str, dict[str, Any]], name: Optional[str], kind: str) -> T:
    """``cfg`` with the overrides of preset ``name`` (unchanged for None); an unknown name is a UserError."""
    if not name:
        return cfg
    if name not in table:
        raise UserError(f"unknown {kind} preset {name!r}; valid: {', '.join(table)}")
    return replace(cfg, **table[name])
