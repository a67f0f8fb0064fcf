"""The host layer in the plan: what a container waits for, how host actions read, and that the
in-memory host refuses a container start without its delegation (so the planner cases prove
the order). The cases themselves are in ``cases/1xx-host-layer-*`` and ``1xx-preflight-*``."""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.report import apply_text, plan_markdown, plan_text
from tests.unit.planning import support

TOM = {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}
FLEET = support.fleet_from({"users": TOM, "hosts": {"h1": {"ssh": "root@h1"}}})
HOST_ACTIONS = (
    "h1/account/tom/host-account",
    "h1/delegation/subuid:1003/host-delegation",
    "h1/delegation/subgid:1003/host-delegation",
)


def _plan(observed: dict[str, Any], fleet: Any = FLEET, **options: Any) -> plans.Plan:
    snapshot = support.snapshot_from(observed, fleet, sites.REAL)
    return planner.make_plan(fleet, snapshot, sites.REAL, **options)


def test_the_create_and_start_wait_for_the_account_home_and_delegations() -> None:
    made = _plan({"h1": {"facts": {}}})
    by_id = {a.id: a for a in made.actions}
    create = by_id["h1/instance/tom-container/create"]
    assert set(HOST_ACTIONS) <= set(create.depends_on)
    assert set(HOST_ACTIONS) <= set(by_id["h1/instance/tom-container/start"].depends_on)
    ids = [a.id for a in made.actions]
    assert max(ids.index(a) for a in HOST_ACTIONS) < ids.index(create.id)


def test_a_stopped_container_start_and_an_idmap_update_wait_for_a_lost_delegation() -> None:
    """Someone removed root's subuid line: it is added again before the container starts."""
    observed = {
        "h1": {
            "instances": {"tom-container": {"as_desired": True, "status": "Stopped"}},
            "facts": {
                "accounts": [{"name": "tom", "uid": 1003, "gid": 1003}],
                "dirs": {"/home/tom": {"uid": 1003, "gid": 1003, "mode": "750"}},
                "subgid": ["root:1003:1"],
            },
        }
    }
    made = _plan(observed)
    by_id = {a.id: a for a in made.actions}
    assert by_id["h1/instance/tom-container/start"].depends_on == (
        "h1/delegation/subuid:1003/host-delegation",
    )
    after = support.simulate_apply(made, support.snapshot_from(observed, FLEET, sites.REAL), FLEET)
    assert _plan_after(after).actions == ()


def _plan_after(snapshot: Any) -> plans.Plan:
    return planner.make_plan(FLEET, snapshot, sites.REAL)


def test_the_fake_host_refuses_a_start_without_the_delegation() -> None:
    """Without the host actions (removed from the plan) the container's start fails as LXD's
    would: the planner cases' apply-then-plan-again proves the order."""
    observed = {"h1": {"facts": {}}}
    made = _plan(observed)
    hosts = tuple(
        host.model_copy(
            update={
                "actions": tuple(
                    a.model_copy(update={"depends_on": ()})
                    for a in host.actions
                    if a.object.kind.value == "instance"
                )
            }
        )
        for host in made.hosts
    )
    stripped = made.model_copy(update={"hosts": hosts})
    snapshot = support.snapshot_from(observed, FLEET, sites.REAL)
    with pytest.raises(support.Refused, match="forkstart"):
        support.simulate_apply(stripped, snapshot, FLEET)


def test_host_actions_read_as_the_plan_shows_them() -> None:
    made = _plan({"h1": {"facts": {"dirs": {"/home/tom": {"uid": 0, "gid": 0, "mode": "750"}}}}})
    text = plan_text.plain(made)
    assert "  + host account tom (uid 1003, gid 1003, shell nologin, home /home/tom 0750)" in text
    assert "  + subuid root:1003:1" in text
    assert "  + subgid root:1003:1" in text
    assert "  ~ home /home/tom owner 1003:1003\n" in text
    assert '      ~ owner: "0:0" -> "1003:1003"' in text
    markdown = plan_markdown.render(made)
    assert "! home /home/tom owner 1003:1003" in markdown
    assert "+ subuid root:1003:1" in markdown
    delegation = next(a for a in made.actions if a.object.name == "subuid:1003")
    assert apply_text.describe(delegation) == "create subuid root:1003:1"
    assert "Plan: 4 to create, 1 to update" in text


def test_a_removed_delegation_reads_with_a_minus() -> None:
    observed = {
        "h1": {"facts": {"subuid": ["root:1500:1"], "ledger": ["subuid:1500"]}},
    }
    made = _plan(observed, fleet=support.fleet_from({}), prune=True)
    assert "  - subuid root:1500:1" in plan_text.plain(made)
    assert made.summary.delete == 1
