"""Order of a plan: profiles before the containers that use them, creates and updates before
starts, deletes last (containers before their profiles); hosts independent; ids stable."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from tests.unit.planning import support

MANAGED = {"user.lxdgpu.managed": "true", "security.protection.delete": "false"}

FLEET: dict[str, Any] = {
    "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
    "profiles": {"matlab": {"devices": {"m": {"type": "disk", "source": "/m", "path": "/m"}}}},
    "users": {
        "amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001, "cuda": ["9.0"]},
        "bea": {"host": "h1", "template": "desk", "uid": 1002, "gid": 1002, "profiles": ["matlab"]},
        "cat": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003},
        "dan": {"host": "h2", "template": "desk", "uid": 1004, "gid": 1004, "cuda": ["10.0"]},
    },
}
OBSERVED: dict[str, Any] = {
    "h1": {
        "profiles": {
            "default": {},
            "matlab": {"as_desired": True, "devices": {"m": {"source": "/old"}}},
            "cuda-10.0": {"config": {"user.lxdgpu.managed": "true"}},
        },
        "instances": {
            "bea-container": {
                "as_desired": True,
                "status": "Stopped",
                "config": {"limits.cpu": "1"},
            },
            "cat-container": {
                "as_desired": True,
                "status": "Running",
                "config": {"raw.idmap": "both 1003 1000"},
            },
            "old-container": {
                "status": "Running",
                "profiles": ["default", "cuda-10.0"],
                "config": {**MANAGED, "user.lxdgpu.user": "old"},
            },
        },
    },
    "h2": {},
}


def _plan() -> planning.Plan:
    fleet = support.fleet_from(FLEET)
    snapshot = support.snapshot_from(OBSERVED, fleet, sites.REAL)
    return planner.make_plan(fleet, snapshot, sites.REAL, prune=True, allow_restart=True)


def test_order_on_one_host() -> None:
    made = _plan()
    h1 = made.hosts[0]
    assert [a.id for a in h1.actions] == [
        "h1/profile/cuda-9.0/profile-write",
        "h1/profile/matlab/profile-write",
        "h1/instance/amy-container/create",
        "h1/instance/bea-container/update",
        "h1/instance/cat-container/restart-stop",
        "h1/instance/cat-container/restart-update",
        "h1/instance/amy-container/start",
        "h1/instance/bea-container/start",
        "h1/instance/cat-container/restart-start",
        "h1/instance/old-container/delete-stop",
        "h1/instance/old-container/delete",
        "h1/profile/cuda-10.0/profile-delete",
    ]
    by_id = {a.id: a for a in h1.actions}
    assert (
        "h1/profile/cuda-9.0/profile-write" in by_id["h1/instance/amy-container/create"].depends_on
    )
    assert "h1/profile/matlab/profile-write" in by_id["h1/instance/bea-container/update"].depends_on
    assert by_id["h1/profile/cuda-10.0/profile-delete"].depends_on == (
        "h1/instance/old-container/delete",
    )


def test_every_dependency_comes_first_and_stays_on_its_host() -> None:
    made = _plan()
    for host in made.hosts:
        seen: set[str] = set()
        for action in host.actions:
            assert action.host == host.host
            assert set(action.depends_on) <= seen, action.id
            seen.add(action.id)
    ids = [a.id for a in made.actions]
    assert len(ids) == len(set(ids))


def test_hosts_are_planned_independently_in_fleet_order() -> None:
    made = _plan()
    assert [h.host for h in made.hosts] == ["h1", "h2"]
    assert [a.id for a in made.hosts[1].actions] == [
        "h2/profile/cuda-10.0/profile-write",
        "h2/instance/dan-container/create",
        "h2/instance/dan-container/start",
    ]


def test_plan_is_deterministic() -> None:
    assert _plan() == _plan()
