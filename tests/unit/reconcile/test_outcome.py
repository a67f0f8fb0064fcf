"""A run's result and exit code from its plan and apply, and the per-host counts."""

from __future__ import annotations

import pytest

from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Outcome
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.reconcile import outcome


def _action(name: str, *, cause: str = "drift", pending: str | None = None) -> planning.Action:
    return planning.Action(
        id=f"h1/instance/{name}/update",
        kind=planning.ActionKind.UPDATE,
        host="h1",
        object=ObjectRef(kind=ObjectKind.INSTANCE, name=name),
        cause=planning.Cause(cause),
        pending=pending,
        hold=planning.Hold.RESTART if pending else None,
    )


def _plan(*actions: planning.Action, errors: tuple[PlanError, ...] = ()) -> planning.Plan:
    host = planning.HostPlan(host="h1", applyable=not errors, errors=errors, actions=actions)
    made = planning.Plan(hosts=(host,))
    return made.model_copy(update={"summary": planning.summarise(made)})


def _report(*outcomes: tuple[str, Outcome]) -> ApplyReport:
    return ApplyReport(
        results=tuple(
            ActionResult(id=f"h1/instance/{n}/update", host="h1", outcome=o) for n, o in outcomes
        )
    )


ERROR = PlanError(code=ErrorCode.MISSING_IMAGE, message="no image", host="h1")


@pytest.mark.parametrize(
    ("made", "report", "result", "code"),
    [
        pytest.param(_plan(), ApplyReport(), outcome.Result.CONVERGED, 0, id="nothing-to-do"),
        pytest.param(
            _plan(_action("a")), _report(("a", Outcome.DONE)), outcome.Result.CHANGED, 2, id="done"
        ),
        pytest.param(
            _plan(_action("a"), _action("b", pending="needs a restart")),
            _report(("a", Outcome.DONE), ("b", Outcome.PENDING)),
            outcome.Result.PENDING,
            3,
            id="applied-and-pending",
        ),
        pytest.param(
            _plan(_action("b", pending="paused")),
            _report(("b", Outcome.PENDING)),
            outcome.Result.PENDING,
            3,
            id="only-pending",
        ),
        pytest.param(
            _plan(_action("a"), _action("b", pending="x")),
            _report(("a", Outcome.FAILED), ("b", Outcome.PENDING)),
            outcome.Result.ERRORS,
            1,
            id="failed-wins-over-pending",
        ),
        pytest.param(
            _plan(errors=(ERROR,)), ApplyReport(), outcome.Result.ERRORS, 1, id="plan-error"
        ),
    ],
)
def test_result_and_exit_code(
    made: planning.Plan, report: ApplyReport, result: outcome.Result, code: int
) -> None:
    assert outcome.result_of(made, report) is result
    assert outcome.exit_code(result) == code


def test_every_result_has_its_documented_exit_code() -> None:
    assert {r.value: c for r, c in outcome.EXIT_CODES.items()} == {
        "converged": 0,
        "errors": 1,
        "changed": 2,
        "pending": 3,
        "locked": 4,
    }


def test_host_counts_drift_pending_errors_applied() -> None:
    made = _plan(
        _action("a"),
        _action("b", cause="change"),
        _action("c", cause="power", pending="paused"),
    )
    report = _report(("a", Outcome.DONE), ("b", Outcome.FAILED), ("c", Outcome.PENDING))
    assert outcome.host_counts(made, report) == {
        "h1": outcome.HostCounts(drift=2, pending=1, errors=1, applied=1)
    }
