"""The reconcile policy: what a run may apply at a given local time. Pure: no clock is read."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from lxdgpu_reconcile.fleet.models import ReconcilePolicy
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.reconcile import policy
from tests.unit.planning import support
from tests.unit.planning.test_planning_templates import BASE, host, plan_of


def at(text: str) -> datetime.time:
    return datetime.time.fromisoformat(text)


def test_default_policy_applies_no_restart_no_delete_no_build() -> None:
    decision = policy.decide(ReconcilePolicy(), at("03:00"))
    assert (decision.allow_restart, decision.prune, decision.allow_template_builds) == (
        False,
        False,
        False,
    )
    assert (decision.restarts, decision.at) == ("never", "03:00")


def test_always_and_deletes_and_builds() -> None:
    decision = policy.decide(
        ReconcilePolicy(allow_restarts="always", allow_deletes=True, allow_template_builds=True),
        at("14:30"),
    )
    assert (decision.allow_restart, decision.prune, decision.allow_template_builds) == (
        True,
        True,
        True,
    )
    assert decision.restarts == "always"


# Factors: a window within a day, and one crossing midnight; times before, at the start, inside,
# at the end (exclusive) and after.
@pytest.mark.parametrize(
    ("window", "now", "inside"),
    [
        pytest.param("02:00-06:00", "01:59", False, id="day-before"),
        pytest.param("02:00-06:00", "02:00", True, id="day-at-start"),
        pytest.param("02:00-06:00", "04:30", True, id="day-inside"),
        pytest.param("02:00-06:00", "05:59", True, id="day-last-minute"),
        pytest.param("02:00-06:00", "06:00", False, id="day-at-end"),
        pytest.param("02:00-06:00", "23:00", False, id="day-after"),
        pytest.param("22:00-06:00", "21:59", False, id="night-before"),
        pytest.param("22:00-06:00", "22:00", True, id="night-at-start"),
        pytest.param("22:00-06:00", "23:59", True, id="night-before-midnight"),
        pytest.param("22:00-06:00", "00:00", True, id="night-midnight"),
        pytest.param("22:00-06:00", "05:59", True, id="night-after-midnight"),
        pytest.param("22:00-06:00", "06:00", False, id="night-at-end"),
        pytest.param("22:00-06:00", "12:00", False, id="night-midday"),
        pytest.param("23:30-00:15", "00:10", True, id="short-across-midnight"),
    ],
)
def test_restart_window(window: str, now: str, inside: bool) -> None:
    decision = policy.decide(
        ReconcilePolicy(allow_restarts="window", restart_window=window), at(now)
    )
    assert decision.allow_restart is inside
    assert decision.restarts == f"{'inside' if inside else 'outside'} {window}"


def test_window_is_normalised_when_loaded() -> None:
    loaded = ReconcilePolicy(allow_restarts="window", restart_window=" 2:00 - 6:00 ")
    assert loaded.restart_window == "02:00-06:00"


@pytest.mark.parametrize("bad", ["2-6", "24:00-01:00", "02:60-03:00", "02:00-02:00", "02:00"])
def test_bad_windows_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        ReconcilePolicy(allow_restarts="window", restart_window=bad)


RESTART: dict[str, Any] = {
    "fleet": {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}},
    "observed": {
        "h1": {
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"raw.idmap": "uid 1009 1000\ngid 1009 1000", "limits.cpu": "3"},
                },
                "old-container": {
                    "status": "Stopped",
                    "config": {"user.lxdgpu.managed": "true", "user.lxdgpu.user": "old"},
                },
            }
        }
    },
}


def _governed(policy_data: dict[str, Any], now: str) -> planning.Plan:
    fleet = support.fleet_from(RESTART["fleet"])
    site = support.site_from(None)
    snapshot = support.snapshot_from(RESTART["observed"], fleet, site)
    decision = policy.decide(ReconcilePolicy.model_validate(policy_data), at(now))
    made = planner.make_plan(
        fleet, snapshot, site, prune=decision.prune, allow_restart=decision.allow_restart
    )
    return policy.govern(made, decision)


def _pending(p: planning.Plan) -> dict[str, str | None]:
    return {a.id: a.pending for a in p.actions}


def test_default_policy_holds_restarts_and_deletes_and_says_which_setting() -> None:
    governed = _governed({}, "12:00")
    pending = _pending(governed)
    assert pending["h1/instance/tom-container/update"] is None  # the live part is applied
    held = pending["h1/instance/tom-container/restart-update"] or ""
    assert held.startswith("needs a restart: reconcile.allow_restarts is never")
    assert "apply --allow-restart" in held
    assert (pending["h1/instance/old-container/delete"] or "").startswith(
        "kept: reconcile.allow_deletes is false"
    )
    assert governed.summary.pending == 2 and governed.summary.update == 1


def test_outside_the_window_the_reason_names_it_and_the_time() -> None:
    held = _pending(
        _governed({"allow_restarts": "window", "restart_window": "02:00-06:00"}, "12:00")
    )
    assert (held["h1/instance/tom-container/restart-update"] or "").startswith(
        "needs a restart: only inside reconcile.restart_window 02:00-06:00 (now 12:00)"
    )


def test_inside_the_window_restarts_are_planned_not_pending() -> None:
    governed = _governed({"allow_restarts": "window", "restart_window": "22:00-06:00"}, "01:00")
    restart = next(a for a in governed.actions if a.restart and a.kind.value == "update")
    assert restart.pending is None and governed.summary.restart == 1


def test_deletes_allowed_are_planned_as_with_prune() -> None:
    governed = _governed({"allow_deletes": True}, "12:00")
    assert _pending(governed)["h1/instance/old-container/delete"] is None


def _action(host: str, kind: str, name: str, *deps: str) -> planning.Action:
    return planning.Action(
        id=f"{host}/{name}/{kind}",
        kind=planning.ActionKind(kind),
        host=host,
        object=ObjectRef(kind=ObjectKind.INSTANCE, name=name),
        depends_on=deps,
    )


def test_template_actions_are_held_back_unless_allowed_with_what_waits_for_them() -> None:
    build = _action("h1", "build", "tpl")
    copy = _action("h2", "copy", "tpl", build.id)
    create = _action("h2", "create", "amy", copy.id)
    other = _action("h1", "update", "bob")
    made = planning.Plan(
        hosts=(
            planning.HostPlan(host="h1", applyable=True, actions=(build, other)),
            planning.HostPlan(host="h2", applyable=True, actions=(copy, create)),
        )
    )
    held = policy.govern(made, policy.decide(ReconcilePolicy(), at("12:00")))
    by_id = {a.id: a for a in held.actions}
    assert by_id[build.id].hold is planning.Hold.POLICY
    assert "reconcile.allow_template_builds is false" in (by_id[build.id].pending or "")
    assert by_id[copy.id].hold is planning.Hold.POLICY
    assert by_id[create.id].hold is planning.Hold.DEPENDENCY
    assert by_id[create.id].pending == f"waits for {copy.id}, which is pending"
    assert by_id[other.id].pending is None
    assert held.summary.pending == 3

    allowed = policy.decide(ReconcilePolicy(allow_template_builds=True), at("12:00"))
    assert policy.govern(made, allowed) == made


def test_a_real_template_plan_is_held_back_by_default() -> None:
    made = plan_of(host("h1", BASE), host("h2"))
    held = policy.govern(made, policy.decide(ReconcilePolicy(), at("12:00")))
    assert {a.kind.value: a.hold for a in held.actions} == {
        "build": planning.Hold.POLICY,
        "copy": planning.Hold.POLICY,
        "create": planning.Hold.DEPENDENCY,
        "start": planning.Hold.DEPENDENCY,
    }
    assert held.summary.pending == 3 and held.summary.builds == 0
