"""One reconcile cycle: observe, plan, hold back what the policy does not allow, apply the rest.

Does I/O (observes and writes to the hosts). The policy decision is made by the caller from the
clock (``policy.decide``), so this module reads no clock; the caller also owns the lock, the
fleet file and the reporting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import ApplyReport
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.reading import observe_fleet
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.reconcile import policy as policies

#: Seconds each host gets to answer the observation.
OBSERVE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Cycle:
    """What one cycle planned (with the policy's holds) and what its apply did."""

    plan: plans.Plan
    report: ApplyReport


def run_cycle(
    fleet: Fleet,
    site: sites.Site,
    decision: policies.Decision,
    *,
    template_files: Mapping[str, Mapping[str, bytes]],
    timeout: float,
    progress: executor.Progress | None = None,
) -> Cycle:
    """Observe every host, plan, govern the plan with ``decision`` and apply what it allows.

    Nothing is applied when the plan has errors not tied to a host, or nothing is left to do.
    """
    snapshot = observe_fleet(fleet, timeout=min(timeout, OBSERVE_TIMEOUT))
    plan = planner.make_plan(
        fleet,
        snapshot,
        site,
        prune=decision.prune,
        allow_restart=decision.allow_restart,
        template_files=template_files,
    )
    plan = policies.govern(plan, decision)
    if plan.errors or all(action.pending is not None for action in plan.actions):
        return Cycle(plan=plan, report=ApplyReport())
    report = executor.apply_plan(
        plan, fleet, timeout=timeout, progress=progress, template_files=template_files
    )
    return Cycle(plan=plan, report=report)
