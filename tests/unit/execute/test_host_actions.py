"""Host actions performed by the executor (``execute.host_actions``) on an in-memory host
(``tests.fakes.host.FakeHost``): the argument vectors sent, failures, and the refusals of a
saved plan edited by hand."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.execute import executor, host_actions
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.observe.host_facts import LEDGER_DIR
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from tests.fakes.fleet import FakeFleet
from tests.fakes.host import FakeHost
from tests.unit.planning import support

TOM = {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}
FLEET = support.fleet_from({"users": TOM})


def _apply(
    plan: plans.Plan, host: FakeHost | None, *, prune: bool = False
) -> dict[str, ActionResult]:
    snapshot = support.snapshot_from({"h1": {}}, FLEET, sites.REAL)
    report = executor.apply_plan(
        plan,
        FLEET,
        timeout=5.0,
        connect=FakeFleet(snapshot).connect,
        authority=executor.Authority(prune=prune),
        open_shell=lambda name: host,
    )
    return {result.id: result for result in report.results}


def _one(kind: plans.ActionKind, ref: ObjectRef, body: Any, step: str = "x") -> plans.Plan:
    action = plans.Action(
        id=f"h1/{ref.kind.value}/{ref.name}/{step}", kind=kind, host="h1", object=ref, body=body
    )
    return plans.Plan(hosts=(plans.HostPlan(host="h1", applyable=True, actions=(action,)),))


def _account(**change: Any) -> plans.Plan:
    fields: dict[str, Any] = {
        "name": "tom",
        "uid": 1003,
        "gid": 1003,
        "home": "/home/tom",
        "home_mode": "0750",
        "shell": "/usr/sbin/nologin",
        "create_home": True,
    }
    fields.update(change)
    ref = ObjectRef(kind=ObjectKind.ACCOUNT, name=fields["name"])
    return _one(plans.ActionKind.CREATE, ref, plans.AccountBody(**fields))


def _home(path: str, uid: int = 1003, gid: int = 1003) -> plans.Plan:
    ref = ObjectRef(kind=ObjectKind.HOME, name=path)
    body = plans.HomeBody(path=path, uid=uid, gid=gid, mode="0750")
    return _one(plans.ActionKind.UPDATE, ref, body)


def _delegation(kind: plans.ActionKind, file: str, ident: int) -> plans.Plan:
    ref = ObjectRef(kind=ObjectKind.DELEGATION, name=f"{file}:{ident}")
    return _one(kind, ref, plans.DelegationBody(file=file, id=ident))  # type: ignore[arg-type]


def test_a_new_user_gets_exactly_these_commands() -> None:
    host = FakeHost(name="h1")
    snapshot = support.snapshot_from({"h1": {"facts": {}}}, FLEET, sites.REAL)
    made = planner.make_plan(FLEET, snapshot, sites.REAL)
    support.simulate_apply(made, snapshot, FLEET)  # the whole plan applies
    results = _apply(made, host)
    assert all(r.outcome is Outcome.DONE for r in results.values() if "/instance/" not in r.id)
    assert host.commands[:7] == [
        ("getent", "group", "1003"),
        ("groupadd", "-g", "1003", "tom"),
        (
            "useradd",
            "-u",
            "1003",
            "-g",
            "1003",
            "-d",
            "/home/tom",
            "-s",
            "/usr/sbin/nologin",
            "-m",
            "-k",
            "/etc/skel",
            "tom",
        ),
        ("usermod", "-L", "tom"),
        ("stat", "-c", "%F", "--", "/home/tom"),
        ("chown", "-h", "--", "1003:1003", "/home/tom"),
        ("chmod", "--", "0750", "/home/tom"),
    ]
    assert ("usermod", "--add-subuids", "1003-1003", "root") in host.commands
    assert (
        "sh",
        "-c",
        host_actions.LEDGER_ADD,
        "lxdgpu-ledger",
        LEDGER_DIR,
        "subgid:1003",
    ) in host.commands
    assert host.accounts["tom"].locked and host.accounts["tom"].shell == "/usr/sbin/nologin"
    assert host.nodes["/home/tom"].mode == 0o750
    assert host.ledger == ["subgid:1003", "subuid:1003"]


def test_a_failing_command_fails_the_action_with_its_complaint() -> None:
    host = FakeHost(name="h1")
    host.fail("useradd", "useradd: cannot lock /etc/passwd; try again later.", returncode=1)
    result = _apply(_account(), host)["h1/account/tom/x"]
    assert result.outcome is Outcome.FAILED
    assert "cannot lock /etc/passwd" in result.message and "useradd -u 1003" in result.message
    assert "root" in result.hint
    assert "tom" not in host.accounts


def test_a_home_that_became_a_file_is_not_chowned() -> None:
    host = FakeHost(name="h1")
    host.nodes["/home/tom"] = host.nodes["/"].__class__("regular file")
    result = _apply(_home("/home/tom"), host)["h1/home//home/tom/x"]
    assert result.outcome is Outcome.FAILED and "not a directory" in result.message
    assert not any(c[0] in ("chown", "chmod") for c in host.commands)


def test_no_shell_fails_the_host_action_clearly() -> None:
    result = _apply(_account(), None)["h1/account/tom/x"]
    assert result.outcome is Outcome.FAILED
    assert "hosts.h1.ssh" in result.message and "hosts.h1.ssh" in result.hint


def test_an_edited_plan_never_makes_an_account_of_uid_0() -> None:
    host = FakeHost(name="h1")
    for plan in (_account(uid=0, gid=0), _account(name="root", uid=0, gid=0)):
        result = next(iter(_apply(plan, host).values()))
        assert result.outcome is Outcome.FAILED, result
        assert "nothing was changed" in result.message
    assert host.commands == []


def test_an_edited_plan_never_chowns_etc_or_another_users_home() -> None:
    host = FakeHost(name="h1")
    for plan in (
        _home("/etc"),
        _home("/home/../etc"),
        _home("/home/tom", uid=1004, gid=1004),
        _account(home="/etc"),
        _account(shell="/bin/bash"),
    ):
        result = next(iter(_apply(plan, host).values()))
        assert result.outcome is Outcome.FAILED, result
        assert "plan again" in result.hint
    assert host.commands == []


def test_a_delegation_is_removed_only_with_prune_and_from_the_ledger() -> None:
    host = FakeHost(name="h1", subuid=[("root", 1500, 1)], ledger=["subuid:1500"])
    plan = _delegation(plans.ActionKind.DELETE, "subuid", 1500)
    result = _apply(plan, host)["h1/delegation/subuid:1500/x"]
    assert result.outcome is Outcome.FAILED and "--prune" in result.message
    assert host.commands == [] and host.subuid == [("root", 1500, 1)]
    assert _apply(plan, host, prune=True)["h1/delegation/subuid:1500/x"].outcome is Outcome.DONE
    assert host.subuid == [] and host.ledger == []
    assert (
        "sh",
        "-c",
        host_actions.SUBID_DROP,
        "lxdgpu-subid",
        "/etc/subuid",
        "1500",
    ) in host.commands
    assert not any(c[0] == "usermod" for c in host.commands)  # refused for root on real hosts


def test_a_removal_drops_only_the_line_the_tool_added() -> None:
    host = FakeHost(
        name="h1",
        subgid=[("root", 1000, 1000), ("root", 1500, 1), ("tom", 1500, 1)],
        ledger=["subgid:1500", "subuid:1003"],
    )
    result = _apply(_delegation(plans.ActionKind.DELETE, "subgid", 1500), host, prune=True)
    assert result["h1/delegation/subgid:1500/x"].outcome is Outcome.DONE
    assert host.subgid == [("root", 1000, 1000), ("tom", 1500, 1)]
    assert host.ledger == ["subuid:1003"]


def test_a_line_already_removed_by_hand_only_leaves_the_ledger() -> None:
    host = FakeHost(name="h1", subuid=[("root", 100000, 65536)], ledger=["subuid:1500"])
    result = _apply(_delegation(plans.ActionKind.DELETE, "subuid", 1500), host, prune=True)
    done = result["h1/delegation/subuid:1500/x"]
    assert done.outcome is Outcome.DONE and "no longer in /etc/subuid" in done.message
    assert host.subuid == [("root", 100000, 65536)] and host.ledger == []


def test_a_locked_subid_file_fails_the_removal_and_keeps_the_ledger() -> None:
    host = FakeHost(name="h1", subuid=[("root", 1500, 1)], ledger=["subuid:1500"])
    host.fail("lxdgpu-subid", "/etc/subuid is locked (/etc/subuid.lock)", returncode=75)
    result = _apply(_delegation(plans.ActionKind.DELETE, "subuid", 1500), host, prune=True)
    failed = result["h1/delegation/subuid:1500/x"]
    assert failed.outcome is Outcome.FAILED and "is locked" in failed.message
    assert "another program" in failed.hint
    assert host.subuid == [("root", 1500, 1)] and host.ledger == ["subuid:1500"]


def test_a_delegation_the_tool_did_not_add_is_never_removed() -> None:
    host = FakeHost(name="h1", subuid=[("root", 1000, 1000)])
    result = _apply(_delegation(plans.ActionKind.DELETE, "subuid", 1500), host, prune=True)
    assert result["h1/delegation/subuid:1500/x"].outcome is Outcome.FAILED
    assert "ledger" in result["h1/delegation/subuid:1500/x"].message
    assert host.subuid == [("root", 1000, 1000)]


def test_an_edited_plan_never_delegates_a_system_id_or_one_no_user_has() -> None:
    host = FakeHost(name="h1")
    for ident in (0, 999, 1500):
        plan = _delegation(plans.ActionKind.CREATE, "subuid", ident)
        result = next(iter(_apply(plan, host).values()))
        assert result.outcome is Outcome.FAILED, result
    assert host.commands == [] and host.subuid == []
    # and a delegation a fleet user needs is never removed, even with --prune
    keep = _delegation(plans.ActionKind.DELETE, "subuid", 1003)
    assert next(iter(_apply(keep, host, prune=True).values())).outcome is Outcome.FAILED
