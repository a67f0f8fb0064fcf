"""Read a fleet file: YAML with source positions -> ``Fleet``, or every problem with its line.

PROVISIONAL: full positional loader lands shortly; the API (load_fleet, LoadResult, Problem) is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lxdgpu_reconcile.spec.models import Fleet


@dataclass(frozen=True)
class Problem:
    """One problem in a fleet file, pointing at the offending key or value."""

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"  # or "warning"


@dataclass(frozen=True)
class LoadResult:
    path: Path
    fleet: Fleet | None
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def ok(self) -> bool:
        return self.fleet is not None and not self.errors


def load_fleet(path: Path) -> LoadResult:
    """Load and validate ``path``. Relative certificate paths come back absolute."""
    data = yaml.safe_load(path.read_text())
    fleet = Fleet.model_validate(data)
    return LoadResult(path=path, fleet=fleet)
