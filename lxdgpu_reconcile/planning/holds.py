"""Holding back across hosts: what waits for a pending action is pending too. Pure.

The planner holds back within a host as it orders it; ``hold_back`` is what crosses hosts (a
template copy waits for the build on another host, which may be held back or, with ``--target``,
not planned at all) and what a policy adds afterwards (``reconcile.policy.govern``).
"""

from __future__ import annotations

from collections.abc import Mapping

from lxdgpu_reconcile.planning.model import Action, Hold, Plan, summarise


def hold_back(plan: Plan, held: Mapping[str, tuple[str, Hold]] | None = None) -> Plan:
    """``plan`` with the actions in ``held`` pending for the given reasons, and every action that
    waits for a pending action, or for one the plan does not include, pending too (on any host);
    the summary is counted again.

    The planner holds back within a host as it orders it; this is what crosses hosts (a template
    copy waits for the build on another host, which may be held back or, with ``--target``, not
    planned at all) and what a policy adds afterwards (``reconcile.policy.govern``).
    """
    planned = {action.id for action in plan.actions}
    pending = {a.id: (a.pending, a.hold) for a in plan.actions if a.pending is not None}
    pending.update(held or {})
    changed = True
    while changed:
        changed = False
        for action in plan.actions:
            if action.id in pending:
                continue
            why = _waits(action, pending, planned)
            if why is not None:
                pending[action.id] = (why, Hold.DEPENDENCY)
                changed = True
    hosts = tuple(
        host.model_copy(
            update={
                "actions": tuple(
                    a.model_copy(update={"pending": pending[a.id][0], "hold": pending[a.id][1]})
                    if a.id in pending and (a.pending, a.hold) != pending[a.id]
                    else a
                    for a in host.actions
                )
            }
        )
        for host in plan.hosts
    )
    held_plan = plan.model_copy(update={"hosts": hosts})
    return held_plan.model_copy(update={"summary": summarise(held_plan)})


def _waits(action: Action, pending: Mapping[str, object], planned: set[str]) -> str | None:
    """Why ``action`` waits: a dependency that is pending, or that the plan does not include."""
    for dep in action.depends_on:
        if dep not in planned:
            host = dep.partition("/")[0]
            return (
                f"waits for {dep}, which this plan does not include ({host} is outside "
                f"--target): plan with --target {host} as well, or without --target"
            )
        if dep in pending:
            return f"waits for {dep}, which is pending"
    return None
