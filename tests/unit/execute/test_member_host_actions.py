"""The host layer of a cluster host, member by member: the executor runs each action through
its member's shell (``hostshell.member_shell``) and refuses an action that names no member, a
member without an ssh destination, a member the fleet does not put the user on, or an object not
named after its member (``execute.host_checks``); the planner makes a container's create and
move wait for the actions on its member, and the plan text names the member."""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.observe.transport import SshShell, open_shell
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.report import plan_text
from tests.fakes.fleet import FakeFleet
from tests.fakes.host import FakeHost
from tests.unit.planning import support

CLUSTER = {
    "hosts": {
        "dept": {
            "endpoint": "unix:///var/lib/lxd3/unix.socket",
            "cluster": {
                "members": ["node1", "node2", "node3"],
                "ssh": {"node1": "root@node1", "node2": "root@node2"},
            },
        }
    },
    "users": {
        "erin": {"host": "dept", "member": "node2", "template": "desk", "uid": 2001, "gid": 2001},
        "frank": {"host": "dept", "template": "desk", "uid": 2002, "gid": 2002},
    },
}
FLEET = support.fleet_from(CLUSTER)
OBSERVED = {"dept": {"members": {"node1": {}, "node2": {}, "node3": {}}}}


def _apply(plan: plans.Plan, members: dict[str, FakeHost]) -> dict[str, ActionResult]:
    snapshot = support.snapshot_from(OBSERVED, FLEET, sites.REAL)
    report = executor.apply_plan(
        plan,
        FLEET,
        timeout=5.0,
        connect=FakeFleet(snapshot).connect,
        authority=executor.Authority(),
        open_shell=support.Shells({}, {("dept", m): h for m, h in members.items()}),
    )
    return {result.id: result for result in report.results}


def _one(ref: ObjectRef, body: Any) -> plans.Plan:
    action = plans.Action(
        id=f"dept/{ref.kind.value}/{ref.name}/x",
        kind=plans.ActionKind.CREATE,
        host="dept",
        object=ref,
        body=body,
    )
    return plans.Plan(hosts=(plans.HostPlan(host="dept", applyable=True, actions=(action,)),))


def _account(user: str = "erin", member: str | None = "node2", name: str | None = None) -> Any:
    spec = FLEET.users[user]
    body = plans.AccountBody(
        name=user,
        uid=spec.uid,
        gid=spec.gid,
        home=f"/home/{user}",
        home_mode="0750",
        shell="/usr/sbin/nologin",
        create_home=True,
        member=member,
    )
    default = f"{user}@{member}" if member else user
    return _one(ObjectRef(kind=ObjectKind.ACCOUNT, name=name or default), body)


def _nodes() -> dict[str, FakeHost]:
    return {m: FakeHost(name=m, host="dept") for m in ("node1", "node2")}


def test_an_account_on_a_member_is_made_through_that_members_shell_only() -> None:
    nodes = _nodes()
    result = _apply(_account(), nodes)
    assert result["dept/account/erin@node2/x"].outcome is Outcome.DONE
    assert "erin" in nodes["node2"].accounts
    assert nodes["node1"].commands == [] and "erin" not in nodes["node1"].accounts


def test_a_delegation_on_a_member_is_added_there() -> None:
    nodes = _nodes()
    ref = ObjectRef(kind=ObjectKind.DELEGATION, name="node1:subuid:2002")
    result = _apply(_one(ref, plans.DelegationBody(file="subuid", id=2002, member="node1")), nodes)
    assert result["dept/delegation/node1:subuid:2002/x"].outcome is Outcome.DONE
    assert 2002 in nodes["node1"].delegated("subuid")
    assert nodes["node2"].commands == []


def _refused(plan: plans.Plan) -> str:
    nodes = _nodes()
    (result,) = _apply(plan, nodes).values()
    assert result.outcome is Outcome.FAILED
    assert nodes["node1"].commands == [] and nodes["node2"].commands == []
    return result.message


def test_an_action_on_a_cluster_host_without_a_member_is_refused() -> None:
    assert "names no member" in _refused(_account(member=None))


def test_a_member_without_an_ssh_destination_is_refused() -> None:
    # node3 is a member, with no ssh destination; node9 is not a member at all.
    assert "no ssh destination" in _refused(_account(user="frank", member="node3"))
    assert "no ssh destination" in _refused(_account(user="frank", member="node9"))


def test_an_account_on_another_member_than_the_fleet_names_is_refused() -> None:
    assert "puts user erin on member node2" in _refused(_account(member="node1"))


def test_a_delegation_of_a_user_the_fleet_puts_elsewhere_is_refused() -> None:
    ref = ObjectRef(kind=ObjectKind.DELEGATION, name="node1:subuid:2001")
    message = _refused(_one(ref, plans.DelegationBody(file="subuid", id=2001, member="node1")))
    assert "may be on member node1" in message


def test_a_home_of_a_user_the_fleet_puts_elsewhere_is_refused() -> None:
    ref = ObjectRef(kind=ObjectKind.HOME, name="node1:/home/erin")
    body = plans.HomeBody(path="/home/erin", uid=2001, gid=2001, mode="0750", member="node1")
    assert "is not the home" in _refused(_one(ref, body))


def test_an_object_not_named_after_its_member_is_refused() -> None:
    # The name decides the action's id: a plan edited to move the body elsewhere is refused.
    assert "nothing was changed" in _refused(_account(name="erin@node1"))
    ref = ObjectRef(kind=ObjectKind.HOME, name="/home/frank")
    body = plans.HomeBody(path="/home/frank", uid=2002, gid=2002, mode="0750", member="node1")
    assert "not after member node1" in _refused(_one(ref, body))


def test_a_member_on_a_single_server_is_refused() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    host = FakeHost(name="h1")
    body = plans.AccountBody(
        name="tom",
        uid=1003,
        gid=1003,
        home="/home/tom",
        home_mode="0750",
        shell="/usr/sbin/nologin",
        create_home=True,
        member="node1",
    )
    ref = ObjectRef(kind=ObjectKind.ACCOUNT, name="tom@node1")
    action = plans.Action(
        id="h1/account/tom@node1/x", kind=plans.ActionKind.CREATE, host="h1", object=ref, body=body
    )
    plan = plans.Plan(hosts=(plans.HostPlan(host="h1", applyable=True, actions=(action,)),))
    snapshot = support.snapshot_from({"h1": {}}, fleet, sites.REAL)
    report = executor.apply_plan(
        plan,
        fleet,
        timeout=5.0,
        connect=FakeFleet(snapshot).connect,
        authority=executor.Authority(),
        open_shell=support.Shells({"h1": host}, {("h1", "node1"): host}),
    )
    (result,) = report.results
    assert result.outcome is Outcome.FAILED and "is not a cluster" in result.message
    assert host.commands == []


def test_the_opener_reaches_members_over_their_own_ssh_and_never_with_local() -> None:
    opener = open_shell(FLEET, sites.Site(ssh_config="/tmp/lab/ssh_config"))
    shell = opener.member("dept", "node2")  # type: ignore[attr-defined]
    assert isinstance(shell, SshShell) and shell.destination == "root@node2"
    assert shell.ssh_config == "/tmp/lab/ssh_config"
    assert opener.member("dept", "node3") is None  # type: ignore[attr-defined]
    local = open_shell(FLEET, sites.Site(local=True))
    assert local.member("dept", "node2") is None  # type: ignore[attr-defined]


def test_create_and_move_wait_for_their_members_host_actions_and_the_text_names_it() -> None:
    case = {
        "fleet": CLUSTER,
        "options": {"allow_restart": True},
        "observed": {
            "dept": {
                "members": {"node1": {}, "node2": {}},
                "instances": {"erin-container": {"as_desired": True, "location": "node1"}},
                "member_facts": {
                    "node1": {"subuid": ["root:2000:100"], "subgid": ["root:2000:100"]},
                    "node2": {"subuid": ["root:2000:100"], "subgid": ["root:2000:100"]},
                },
            }
        },
    }
    made = support.plan_scenario(case, allow_restart=True)
    by_id = {a.id: a for a in made.actions}
    move = by_id["dept/instance/erin-container/move"]
    assert "dept/account/erin@node2/host-account" in move.depends_on
    # frank is placed by the rule (node2 has erin's container coming; node1 has it leaving).
    create = by_id["dept/instance/frank-container/create"]
    member = create.body.target  # type: ignore[union-attr]
    assert f"dept/account/frank@{member}/host-account" in create.depends_on
    assert not any(a.object.name.startswith("erin@node1") for a in made.actions)
    words = plan_text.object_words(by_id["dept/account/erin@node2/host-account"])
    assert words.startswith("host account erin on node2 (uid 2001")


def test_the_in_memory_cluster_refuses_a_start_without_the_members_delegation() -> None:
    # Without the host layer (--local leaves a cluster's members alone), node2's own system has
    # no delegation of erin's ids: the start is refused as LXD refuses it, so every cluster
    # case of the planner proves that the delegations are made on the right member first.
    case = {
        "fleet": CLUSTER,
        "observed": {
            "h1": {},
            "dept": {
                "members": {"node1": {}, "node2": {}, "node3": {}},
                "member_facts": {"node1": {}, "node2": {}},
            },
        },
    }
    fleet = support.fleet_from(case["fleet"])
    snapshot = support.snapshot_from(case["observed"], fleet, sites.REAL)
    made = planner.make_plan(fleet, snapshot, sites.Site(local=True))
    with pytest.raises(support.Refused, match="erin-container/start: failed"):
        support.simulate_apply(made, snapshot, fleet, sites.REAL)
