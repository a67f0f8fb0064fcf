"""The pure half of the reconciler: desired state, diff, plan. No I/O anywhere in this package.

``make_plan(fleet, snapshot, site, ...)`` is the one entry point the CLI needs; the stages are
``desired.expand`` (fleet -> desired objects per host), ``diff`` (field changes on a normalised
form), ``rules`` (what LXD applies live or only at start) and ``plan.build_plan`` (ordered
actions, errors, notes). See docs/planning.md.
"""

from __future__ import annotations

from lxdgpu_reconcile.planning.plan import (
    Action,
    ActionKind,
    Plan,
    build_plan,
    exit_code,
    make_plan,
    put_request,
)

__all__ = [
    "Action",
    "ActionKind",
    "Plan",
    "build_plan",
    "exit_code",
    "make_plan",
    "put_request",
]
