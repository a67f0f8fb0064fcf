"""The package's layout rules that no linter checks: unique module names, modules of a readable
size (see docs/development.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lxdgpu_reconcile

PACKAGE = Path(lxdgpu_reconcile.__file__).parent
#: No package module grows past this many lines; split it by what it does first.
MAX_LINES = 600


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_no_two_modules_share_a_name_outside_the_commands() -> None:
    names = Counter(p.name for p in modules() if p.parent.name != "cli")
    assert len(names) > 40
    assert [name for name, count in names.items() if count > 1] == []


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in modules()}
    assert max(sizes.values()) > 100
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
