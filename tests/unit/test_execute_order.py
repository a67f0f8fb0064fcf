"""The executor's guard against waiting forever: actions whose dependencies can never finish."""

from __future__ import annotations

from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef


def action(host: str, name: str, *deps: str, pending: str | None = None) -> plans.Action:
    return plans.Action(
        id=f"{host}/start/{name}",
        kind=plans.ActionKind.START,
        host=host,
        object=ObjectRef(kind=ObjectKind.INSTANCE, name=name),
        depends_on=deps,
        pending=pending,
    )


def host(name: str, *actions: plans.Action) -> plans.HostPlan:
    return plans.HostPlan(host=name, applyable=True, actions=actions)


def test_dependencies_across_hosts_in_order_are_ready() -> None:
    a1, a2 = action("a", "c1"), action("a", "c2", "b/start/c1")
    b1 = action("b", "c1", "a/start/c1")
    assert executor._never_ready([host("a", a1, a2), host("b", b1)]) == set()


def test_actions_waiting_on_each_other_across_hosts_and_what_follows_them() -> None:
    # a runs c1 then c2; c1 waits for b's c2, which comes after b's c1, which waits for a's c2.
    a1, a2 = action("a", "c1", "b/start/c2"), action("a", "c2")
    b1, b2 = action("b", "c1", "a/start/c2"), action("b", "c2")
    free = action("c", "c1", "a/start/c1")
    assert executor._never_ready([host("a", a1, a2), host("b", b1, b2), host("c", free)]) == {
        a1.id,
        a2.id,
        b1.id,
        b2.id,
        free.id,
    }


def test_a_dependency_not_in_the_plan_or_of_a_pending_action_blocks_nothing() -> None:
    lost = action("a", "c1", "gone/start/x")
    held = action("a", "c2", "a/start/c3", pending="kept")
    assert executor._never_ready([host("a", lost, held, action("a", "c3"))]) == set()
