"""Why a saved plan is stale, as text: one line per reason, with the fields that changed. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from lxdgpu_reconcile.planning import diff, sensitive
from lxdgpu_reconcile.planning.saving import Stale


def lines(
    stale: Iterable[Stale], *, plan_file: str, replan: str, headline: str | None = None
) -> list[str]:
    """The refusal message: ``headline`` (default: the plan is stale), what changed or differs,
    then how to plan again (``replan``, a command)."""
    out = [headline or f"{plan_file} is stale: nothing was applied."]
    for reason in stale:
        out.append(f"  {reason.message}")
        out.extend(f"      {_change(change)}" for change in reason.changes)
    out.append(f"Run plan again ({replan}), review it, then apply the new plan.")
    return out


def _change(change: diff.FieldChange) -> str:
    """``path: old -> new`` (old: when the plan was made; new: now); secrets masked."""
    change = sensitive.mask_change(change)
    return f"{change.dotted}: {_value(change.old)} -> {_value(change.new)}"


def _value(value: diff.Value | None) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(value.items())) + "}"
    return repr(value) if "\n" in value else f'"{value}"'
