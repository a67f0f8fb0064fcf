"""The executor's own checks, run against in-memory LXD hosts (``tests.fakes.lxd``).

Each test makes a plan (with the planner, or by hand where the planner would never make it),
applies it with ``execute.executor.apply_plan`` over ``FakeFleet.connect`` and looks at the
report and at what reached the hosts.
"""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import fingerprint, planner
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from tests.fakes.fleet import FakeFleet
from tests.fakes.lxd import FakeLxd
from tests.unit.planning import support

TOM = {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}
ANN = {"ann": {"host": "h2", "template": "desk", "uid": 1004, "gid": 1004}}
H2 = {"h2": {"endpoint": "unix:///var/lib/lxd/unix.socket"}}
#: Tom's container on h1 (the single-host tests), and Ann's on h2 (the others).
ONE = support.fleet_from({"users": TOM})
TWO = support.fleet_from({"users": {**TOM, **ANN}, "hosts": H2})


def plan_for(
    observed: dict[str, Any], fleet: Fleet = ONE, **options: Any
) -> tuple[plans.Plan, state.FleetSnapshot]:
    snapshot = support.snapshot_from(observed, fleet, sites.REAL)
    return planner.make_plan(fleet, snapshot, sites.REAL, **options), snapshot


def apply(plan: plans.Plan, hosts: FakeFleet, fleet: Fleet = TWO) -> dict[str, ActionResult]:
    """``plan`` applied with the authority of the options it was made with (``--adopt``,
    ``--prune``), as ``apply`` gives it."""
    authority = executor.Authority(adopt=plan.options.adopt, prune=plan.options.prune)
    report = executor.apply_plan(
        plan, fleet, timeout=5.0, connect=hosts.connect, authority=authority
    )
    return {result.id: result for result in report.results}


def with_actions(plan: plans.Plan, host: str, *actions: plans.Action) -> plans.Plan:
    return plan.model_copy(
        update={"hosts": (plans.HostPlan(host=host, applyable=True, actions=actions),)}
    )


def by_hand(
    kind: plans.ActionKind, name: str, *, observed: str | None = None, **fields: Any
) -> plans.Action:
    return plans.Action(
        id=f"h1/instance/{name}/{kind.value}",
        kind=kind,
        host="h1",
        object=ObjectRef(kind=ObjectKind.INSTANCE, name=name),
        observed=observed,
        **fields,
    )


def stray(status: str, **config: str) -> state.FleetSnapshot:
    """h1 with one container the fleet does not declare."""
    obs = state.InstanceObs(name="stray", status=status, profiles=("default",), config=config)
    host = state.HostSnapshot(
        host="h1",
        endpoint="unix:///x",
        profiles={"default": state.ProfileObs(name="default")},
        instances={"stray": support.expanded(obs, {})},
    )
    return state.FleetSnapshot(hosts={"h1": host})


def test_the_fake_is_an_lxd_api() -> None:
    api: LxdApi = FakeLxd(state.HostSnapshot(host="h1", endpoint="unix:///x"))
    assert api.list("instances", recursion=1) == []


def test_untagged_container_is_updated_only_when_the_action_adopts_it() -> None:
    observed = {"h1": {"instances": {"tom-container": {"as_desired": True, "untag": True}}}}
    made, snapshot = plan_for(observed, adopt=True)
    (update,) = made.actions
    assert update.kind is plans.ActionKind.UPDATE and update.adopt

    refused = FakeFleet(snapshot)
    not_adopting = with_actions(made, "h1", update.model_copy(update={"adopt": False}))
    result = apply(not_adopting, refused)[update.id]
    assert result.outcome is Outcome.FAILED
    assert "is not tagged user.lxdgpu.managed" in result.message
    assert "--adopt" in result.hint
    assert refused.hosts["h1"].writes == []

    adopted = FakeFleet(snapshot)
    assert apply(made, adopted)[update.id].outcome is Outcome.DONE
    assert adopted.hosts["h1"].snapshot().instances["tom-container"].managed


def test_untagged_container_is_neither_stopped_nor_deleted() -> None:
    snapshot = stray("Running", **{"limits.cpu": "2"})
    obs = snapshot.hosts["h1"].instances["stray"]
    delete = by_hand(plans.ActionKind.DELETE, "stray", observed=fingerprint.instance(obs, None))
    stop = by_hand(plans.ActionKind.STOP, "stray", part_of=delete.id)
    delete = delete.model_copy(update={"depends_on": (stop.id,)})
    hosts = FakeFleet(snapshot)
    results = apply(with_actions(plans.Plan(), "h1", stop, delete), hosts)
    assert results[stop.id].outcome is Outcome.FAILED
    assert "not tagged" in results[stop.id].message
    assert results[delete.id].outcome is Outcome.SKIPPED
    assert hosts.hosts["h1"].writes == []
    assert hosts.hosts["h1"].instances["stray"]["status"] == "Running"


def test_protected_container_is_not_deleted() -> None:
    tags = {state.TAG_MANAGED: "true", "security.protection.delete": "true"}
    snapshot = stray("Stopped", **tags)
    obs = snapshot.hosts["h1"].instances["stray"]
    delete = by_hand(plans.ActionKind.DELETE, "stray", observed=fingerprint.instance(obs, None))
    hosts = FakeFleet(snapshot)
    pruning = plans.Plan(options=plans.PlanOptions(prune=True))
    result = apply(with_actions(pruning, "h1", delete), hosts)[delete.id]
    assert result.outcome is Outcome.FAILED
    assert "Instance is protected" in result.message
    assert "security.protection.delete" in result.hint
    assert "stray" in hosts.hosts["h1"].instances


def test_object_changed_since_the_plan_is_refused_with_nothing_written() -> None:
    container = {"as_desired": True, "config": {"limits.cpu": "3"}}
    observed = {"h1": {"instances": {"tom-container": container}}}
    made, snapshot = plan_for(observed)
    (update,) = made.actions
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].instances["tom-container"]["config"]["limits.memory"] = "1GiB"
    result = apply(made, hosts)[update.id]
    assert result.outcome is Outcome.FAILED
    assert "changed since the plan was made; nothing was written" in result.message
    assert hosts.hosts["h1"].writes == []


def test_change_between_read_and_write_is_refused_by_if_match() -> None:
    container = {"as_desired": True, "config": {"limits.cpu": "3"}}
    observed = {"h1": {"instances": {"tom-container": container}}}
    made, snapshot = plan_for(observed)
    (update,) = made.actions
    hosts = FakeFleet(snapshot)
    h1 = hosts.hosts["h1"]

    def someone_else_writes(collection: str, name: str) -> None:
        h1.after_read = None
        h1.instances[name]["config"]["limits.memory"] = "1GiB"

    h1.after_read = someone_else_writes
    result = apply(made, hosts)[update.id]
    assert result.outcome is Outcome.FAILED
    assert "changed on the host since it was read" in result.message
    assert "run plan again" in result.hint
    config = h1.snapshot().instances["tom-container"].config
    assert (config["limits.memory"], config["limits.cpu"]) == ("1GiB", "3")


def test_failed_action_skips_what_depends_on_it_while_other_hosts_go_on() -> None:
    made, snapshot = plan_for({"h1": {}, "h2": {}}, TWO)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].fail("create", "tom-container", "Failed creating instance record")
    results = apply(made, hosts)
    assert results["h1/instance/tom-container/create"].outcome is Outcome.FAILED
    skipped = results["h1/instance/tom-container/start"]
    assert skipped.outcome is Outcome.SKIPPED
    assert "h1/instance/tom-container/create did not succeed" in skipped.message
    assert [r.outcome for r in results.values() if r.host == "h2"] == [Outcome.DONE] * 2
    assert hosts.hosts["h2"].snapshot().instances["ann-container"].running
    assert "tom-container" not in hosts.hosts["h1"].instances
    assert hosts.opened.count("h1") == hosts.hosts["h1"].closed == 1


def test_pending_actions_are_reported_not_performed() -> None:
    container = {"as_desired": True, "config": {"raw.idmap": "uid 1 1000\ngid 1 1000"}}
    made, snapshot = plan_for({"h1": {"instances": {"tom-container": container}}})
    assert made.actions and all(action.pending for action in made.actions)
    hosts = FakeFleet(snapshot)
    results = apply(made, hosts)
    assert {r.outcome for r in results.values()} == {Outcome.PENDING}
    assert "--allow-restart" in results["h1/instance/tom-container/restart-update"].message
    assert hosts.opened == [] and hosts.hosts["h1"].writes == []


def test_start_with_undelegated_idmap_fails_with_the_subuid_hint() -> None:
    made, snapshot = plan_for({"h1": {}, "h2": {}}, TWO)
    hosts = FakeFleet(snapshot, delegated_uids={1004}, delegated_gids={1004})
    results = apply(made, hosts)
    assert results["h1/instance/tom-container/create"].outcome is Outcome.DONE
    failed = results["h1/instance/tom-container/start"]
    assert failed.outcome is Outcome.FAILED
    assert "forkstart tom-container" in failed.message
    assert "/etc/subuid" in failed.hint and "root:UID:1" in failed.hint
    assert results["h2/instance/ann-container/start"].outcome is Outcome.DONE
