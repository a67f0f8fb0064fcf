"""The executor's invariants hold whatever the plan says (``execute.invariants``).

Each test takes a plan the planner made, tampers with it as an edited plan file would (an
``adopt`` flag, a delete, a privileged key, the host's ``/`` mounted), applies it with the real
executor over in-memory LXD hosts (``tests.fakes``) and the authority the run was given, and
checks that the action failed with the reason and that nothing reached the host.
"""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from tests.fakes.fleet import FakeFleet
from tests.unit.planning import support

FLEET = support.fleet_from(
    {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
)
NOTHING = executor.Authority()


def plan_for(observed: dict[str, Any], **options: Any) -> tuple[plans.Plan, state.FleetSnapshot]:
    snapshot = support.snapshot_from(observed, FLEET, sites.REAL)
    return planner.make_plan(FLEET, snapshot, sites.REAL, **options), snapshot


def apply(
    plan: plans.Plan, hosts: FakeFleet, authority: executor.Authority, fleet: Fleet = FLEET
) -> dict[str, ActionResult]:
    report = executor.apply_plan(
        plan, fleet, timeout=5.0, connect=hosts.connect, authority=authority
    )
    return {result.id: result for result in report.results}


def replace_action(plan: plans.Plan, action_id: str, **fields: Any) -> plans.Plan:
    hosts = tuple(
        host.model_copy(
            update={
                "actions": tuple(
                    a.model_copy(update=fields) if a.id == action_id else a for a in host.actions
                )
            }
        )
        for host in plan.hosts
    )
    return plan.model_copy(update={"hosts": hosts})


def test_an_adopt_the_run_was_not_given_is_refused() -> None:
    observed = {"h1": {"instances": {"tom-container": {"as_desired": True, "untag": True}}}}
    made, snapshot = plan_for(observed, adopt=True)  # the plan file says adopt: true
    (update,) = made.actions
    assert update.adopt

    hosts = FakeFleet(snapshot)
    result = apply(made, hosts, NOTHING)[update.id]
    assert result.outcome is Outcome.FAILED
    assert "is not tagged user.lxdgpu.managed" in result.message
    assert "this run was not given --adopt for it" in result.message
    assert "--adopt" in result.hint
    assert hosts.hosts["h1"].writes == []

    other = FakeFleet(snapshot)  # --adopt naming someone else
    assert apply(made, other, executor.Authority(adopt=("ann",)))[update.id].outcome is (
        Outcome.FAILED
    )
    by_user = FakeFleet(snapshot)  # --adopt naming the container's user
    assert apply(made, by_user, executor.Authority(adopt=("tom",)))[update.id].outcome is (
        Outcome.DONE
    )
    assert by_user.hosts["h1"].snapshot().instances["tom-container"].managed


def test_a_delete_without_prune_given_now_is_refused() -> None:
    gone = {
        "status": "Running",
        "config": {
            state.TAG_MANAGED: "true",
            state.TAG_USER: "eve",
            "security.protection.delete": "false",
        },
    }
    observed = {"h1": {"instances": {"eve-container": gone}}}
    made, snapshot = plan_for(observed, prune=True)  # the plan file was made with --prune
    delete = next(a for a in made.actions if a.kind is plans.ActionKind.DELETE)
    stop = next(a for a in made.actions if a.part_of == delete.id)

    hosts = FakeFleet(snapshot)
    results = apply(made, hosts, NOTHING)
    assert results[stop.id].outcome is Outcome.FAILED  # not even stopped for it
    assert "this run was not given --prune" in results[stop.id].message
    assert "--prune" in results[stop.id].hint
    assert results[delete.id].outcome is Outcome.SKIPPED
    assert [w for w in hosts.hosts["h1"].writes if "eve-container" in w or "stop" in w] == []
    assert hosts.hosts["h1"].instances["eve-container"]["status"] == "Running"

    pruning = FakeFleet(snapshot)
    assert apply(made, pruning, executor.Authority(prune=True))[delete.id].outcome is (Outcome.DONE)
    assert "eve-container" not in pruning.hosts["h1"].instances


def test_an_untagged_container_is_never_deleted_even_with_prune_and_adopt() -> None:
    observed = {"h1": {"instances": {"tom-container": {"as_desired": True, "untag": True}}}}
    made, snapshot = plan_for(observed, adopt=True)
    (update,) = made.actions
    delete = update.model_copy(
        update={"id": "h1/instance/tom-container/delete", "kind": plans.ActionKind.DELETE}
    )
    tampered = made.model_copy(
        update={"hosts": (plans.HostPlan(host="h1", applyable=True, actions=(delete,)),)}
    )
    hosts = FakeFleet(snapshot)
    result = apply(tampered, hosts, executor.Authority(adopt=True, prune=True))[delete.id]
    assert result.outcome is Outcome.FAILED
    assert "never deletes it" in result.message
    assert hosts.hosts["h1"].writes == []


def test_a_privileged_key_in_a_create_body_is_refused() -> None:
    made, snapshot = plan_for({"h1": {}})
    create = next(a for a in made.actions if a.kind is plans.ActionKind.CREATE)
    assert isinstance(create.body, plans.CreateInstanceBody)
    body = create.body.model_copy(
        update={"config": {**create.body.config, "security.privileged": "true"}}
    )
    hosts = FakeFleet(snapshot)
    results = apply(replace_action(made, create.id, body=body), hosts, NOTHING)
    assert results[create.id].outcome is Outcome.FAILED
    assert "config.security.privileged" in results[create.id].message
    assert "nothing was written" in results[create.id].message
    assert "plan again" in results[create.id].hint
    assert results["h1/instance/tom-container/start"].outcome is Outcome.SKIPPED
    assert hosts.hosts["h1"].writes == [] and "tom-container" not in hosts.hosts["h1"].instances


def test_a_first_password_for_another_container_user_is_refused() -> None:
    made, snapshot = plan_for({"h1": {}})
    create = next(a for a in made.actions if a.kind is plans.ActionKind.CREATE)
    assert isinstance(create.body, plans.CreateInstanceBody)
    assert create.body.first_password == FLEET.defaults.container_user
    body = create.body.model_copy(update={"first_password": "root"})
    hosts = FakeFleet(snapshot)
    results = apply(replace_action(made, create.id, body=body), hosts, NOTHING)
    assert results[create.id].outcome is Outcome.FAILED
    assert "a first password for root" in results[create.id].message
    assert hosts.hosts["h1"].writes == [] and "tom-container" not in hosts.hosts["h1"].instances


def test_the_hosts_root_mounted_by_an_update_body_is_refused() -> None:
    container = {"as_desired": True, "config": {"limits.cpu": "3"}}
    made, snapshot = plan_for({"h1": {"instances": {"tom-container": container}}})
    (update,) = made.actions
    assert isinstance(update.body, plans.InstanceBody)
    root = {"type": "disk", "source": "/", "path": "/mnt/host"}
    body = update.body.model_copy(update={"devices": {**update.body.devices, "host": root}})
    hosts = FakeFleet(snapshot)
    result = apply(replace_action(made, update.id, body=body), hosts, NOTHING)[update.id]
    assert result.outcome is Outcome.FAILED
    assert "devices.host.source" in result.message
    assert "would expose the host's own system files" in result.message
    assert hosts.hosts["h1"].writes == []


def test_a_raw_idmap_other_than_the_users_is_refused() -> None:
    made, snapshot = plan_for({"h1": {}})
    create = next(a for a in made.actions if a.kind is plans.ActionKind.CREATE)
    assert isinstance(create.body, plans.CreateInstanceBody)
    body = create.body.model_copy(
        update={"config": {**create.body.config, "raw.idmap": "both 0 0"}}
    )
    hosts = FakeFleet(snapshot)
    result = apply(replace_action(made, create.id, body=body), hosts, NOTHING)[create.id]
    assert result.outcome is Outcome.FAILED
    assert "raw.idmap" in result.message
    assert hosts.hosts["h1"].writes == []


def test_the_untampered_plan_applies_with_nothing_given() -> None:
    made, snapshot = plan_for({"h1": {}})
    hosts = FakeFleet(snapshot)
    results = apply(made, hosts, NOTHING)
    assert {r.outcome for r in results.values()} == {Outcome.DONE}
