"""Shared dict round trip for the frozen configuration dataclasses of every room."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar


class DictConfig:
    """Mixin for frozen dataclasses: ``from_dict`` rejects unknown keys naming the valid ones; ``to_dict`` is plain data."""

    section: ClassVar[str] = "config"

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.section} keys {sorted(unknown)}; valid keys: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
