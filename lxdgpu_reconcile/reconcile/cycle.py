"""One reconcile cycle: observe, plan, hold back what the policy does not allow, apply the rest.

Does I/O (observes and writes to the hosts). The policy decision is made by the caller from the
clock (``policy.decide``), so this module reads no clock; the caller also owns the lock, the
fleet file and the reporting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxdgpu_reconcile import service
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import ApplyReport
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.reconcile import policy as policies
from lxdgpu_reconcile.state import FleetSnapshot

#: Seconds each host gets to answer the observation.
OBSERVE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Cycle:
    """What one cycle planned (with the policy's holds) and what its apply did."""

    plan: plans.Plan
    report: ApplyReport


def run_cycle(
    loaded: service.Loaded,
    decision: policies.Decision,
    *,
    timeout: float,
    progress: executor.Progress | None = None,
    observed: Callable[[FleetSnapshot], None] | None = None,
    credentials: Path | None = None,
) -> Cycle:
    """Observe every host, plan, govern the plan with ``decision`` and apply what it allows
    (``service.plan`` and ``service.apply``, as ``apply`` does).

    Nothing is applied when the plan has errors not tied to a host, or nothing is left to do.
    ``observed`` is given the observation the plan was made from, before anything is applied
    (``reconcile --snapshot-out``). ``credentials``: ``--credentials-dir``, where the first
    passwords of containers it creates go.
    """
    request = service.PlanRequest(prune=decision.prune, allow_restart=decision.allow_restart)
    planned = service.plan(loaded, request, timeout=min(timeout, OBSERVE_TIMEOUT))
    if observed is not None:
        observed(planned.snapshot)
    plan = policies.govern(planned.plan, decision)
    if plan.errors or all(action.pending is not None for action in plan.actions):
        return Cycle(plan=plan, report=ApplyReport())
    # The run's own options bound what the executor may delete, whatever the plan says.
    report = service.apply(
        loaded,
        plan,
        timeout=timeout,
        progress=progress,
        request=request,
        credentials=credentials,
    )
    return Cycle(plan=plan, report=report)
