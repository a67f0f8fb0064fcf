"""The result of a reconcile run: its exit code and per-host counts, from its plan and apply. Pure.

=========  ====  ===========================================================================
result     exit  meaning
=========  ====  ===========================================================================
converged  0     nothing to do: every host matches the fleet file
errors     1     the fleet file could not be used, a host has plan errors, or an action failed
changed    2     changes were applied, all of them succeeded, nothing is held back
pending    3     changes are held back (by the policy, a pause or a protection); others may
                 have been applied
locked     4     another run held the lock for longer than ``--lock-wait``; nothing was done
=========  ====  ===========================================================================

Errors win over pending, pending over changed. "Drift" on a host counts the objects that differ
from the fleet file though the fleet file did not change them (``Action.cause`` ``drift``: edited
by hand; ``power``: stopped or started outside the tool).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from enum import StrEnum

from lxdgpu_reconcile.execute.results import ApplyReport, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import Frozen
from lxdgpu_reconcile.reconcile import policy as policies


class Result(StrEnum):
    CONVERGED = "converged"
    ERRORS = "errors"
    CHANGED = "changed"
    PENDING = "pending"
    LOCKED = "locked"


EXIT_CODES: Mapping[Result, int] = {
    Result.CONVERGED: 0,
    Result.ERRORS: 1,
    Result.CHANGED: 2,
    Result.PENDING: 3,
    Result.LOCKED: 4,
}

#: Causes counted as drift.
DRIFT_CAUSES = frozenset({plans.Cause.DRIFT, plans.Cause.POWER})


class HostCounts(Frozen):
    """What one run found and did on one host."""

    drift: int = 0  # objects changed outside the tool
    pending: int = 0  # changes held back (not counting the steps of another change)
    errors: int = 0  # plan errors plus failed actions
    applied: int = 0  # actions performed (steps included)


def result_of(plan: plans.Plan, report: ApplyReport) -> Result:
    """The run's result after applying ``plan`` (``report`` is empty when nothing ran)."""
    if plan.all_errors or not report.ok:
        return Result.ERRORS
    if plan.summary.pending:
        return Result.PENDING
    if report.count(Outcome.DONE):
        return Result.CHANGED
    return Result.CONVERGED


def exit_code(result: Result) -> int:
    return EXIT_CODES[result]


def host_counts(plan: plans.Plan, report: ApplyReport) -> dict[str, HostCounts]:
    """Per host of ``plan``, in plan order: drift, pending, errors, applied."""
    outcomes: dict[str, list[Outcome]] = {}
    for result in report.results:
        outcomes.setdefault(result.host, []).append(result.outcome)
    counts = {}
    for host in plan.hosts:
        drifted = {a.object for a in host.actions if a.cause in DRIFT_CAUSES}
        done = outcomes.get(host.host, [])
        counts[host.host] = HostCounts(
            drift=len(drifted),
            pending=sum(1 for a in host.actions if a.part_of is None and a.pending is not None),
            errors=len(host.errors) + sum(1 for o in done if o is Outcome.FAILED),
            applied=sum(1 for o in done if o is Outcome.DONE),
        )
    return counts


class Run(Frozen):
    """One reconcile run, as the log, the metrics and the terminal summary report it.

    ``plan`` and ``report`` are None when the run stopped before planning (the lock was not
    acquired, the fleet file could not be used); ``message`` then says why.
    """

    id: str
    started: datetime.datetime
    finished: datetime.datetime
    fleet: str
    fleet_sha256: str | None = None
    lab: str | None = None
    version: str
    result: Result
    decision: policies.Decision | None = None
    plan: plans.Plan | None = None
    report: ApplyReport | None = None
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]

    @property
    def hosts(self) -> dict[str, HostCounts]:
        if self.plan is None:
            return {}
        return host_counts(self.plan, self.report or ApplyReport())

    @property
    def succeeded(self) -> bool:
        """The run did its job: it observed every host and nothing failed (held back is fine)."""
        return self.result in (Result.CONVERGED, Result.CHANGED, Result.PENDING)
