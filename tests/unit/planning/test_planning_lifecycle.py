"""Plans over a fleet's life: create, change, prune; each applied plan leaves nothing to do.

Uses ``support.simulate_apply``, which performs actions with the bodies exactly as the executor
must and refuses what LXD refuses, so these tests also check the order and the bodies.
"""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import requests
from lxdgpu_reconcile.planning import fingerprint, planner, rules
from lxdgpu_reconcile.planning import model as planning
from tests.unit.planning import support

FLEET: dict[str, Any] = {
    "profiles": {
        "default": {
            "config": {"boot.autostart": "true", "nvidia.runtime": "true"},
            "devices": {
                "root": {"type": "disk", "path": "/", "pool": "default"},
                "eth0": {"type": "nic", "nictype": "macvlan", "parent": "eno1", "name": "eth0"},
                "gpu": {"type": "gpu"},
            },
        },
        "matlab": {
            "devices": {
                "matlab": {
                    "type": "disk",
                    "source": "/usr/local/MATLAB",
                    "path": "/usr/local/MATLAB",
                    "readonly": "true",
                }
            }
        },
    },
    "users": {
        "tom": {
            "host": "h1",
            "template": "desk",
            "uid": 1003,
            "gid": 1003,
            "cuda": ["10.0"],
            "profiles": ["matlab"],
        },
        "jerry": {
            "host": "h1",
            "template": "desk",
            "uid": 1004,
            "gid": 1004,
            "cuda": ["9.0"],
            "gpus": [0, 1],
            "cpu": 8,
        },
    },
}


def _fresh(gpus: tuple[int, ...] = (0, 1)) -> state.FleetSnapshot:
    return support.snapshot_from({"h1": {"gpus": list(gpus)}}, support.fleet_from({}), sites.REAL)


def _converge(
    fleet_data: dict[str, Any], snapshot: state.FleetSnapshot, site: sites.Site, **options: Any
) -> tuple[planning.Plan, state.FleetSnapshot]:
    fleet = support.fleet_from(fleet_data)
    made = planner.make_plan(fleet, snapshot, site, **options)
    after = support.simulate_apply(made, snapshot, fleet, site)
    again = planner.make_plan(fleet, after, site, **options)
    assert [a.id for a in again.actions if a.pending is None] == []
    return made, after


def test_fresh_host_then_edits_then_prune_converge() -> None:
    options = {"prune": True, "allow_restart": True}
    made, snap = _converge(FLEET, _fresh(), sites.REAL, **options)
    assert made.summary.create == 5  # cuda-9.0, cuda-10.0, matlab, two containers
    assert made.summary.update == 1  # the default profile, taken over

    edited = support.merge(
        FLEET,
        {
            "defaults": {"cpu": "50%"},
            "users": {
                "tom": {"cuda": ["9.0"], "uid": 1010},  # CUDA 10.0 unused; idmap changes
                "jerry": None,  # removed
            },
        },
    )
    made, snap = _converge(edited, snap, sites.REAL, **options)
    kinds = [(a.kind.value, a.object.name, a.restart) for a in made.actions]
    assert ("update", "tom-container", True) in kinds
    # jerry's container is protected: kept, with the way to release it
    delete = next(a for a in made.actions if a.id == "h1/instance/jerry-container/delete")
    assert delete.pending is not None and "security.protection.delete=false" in delete.pending
    # cuda-10.0 is no longer used: deleted after tom's container leaves it
    assert ("delete", "cuda-10.0", False) in kinds

    released = snap.hosts["h1"].instances["jerry-container"]
    released = support.expanded(
        released.model_copy(
            update={"config": {**released.config, "security.protection.delete": "false"}}
        ),
        snap.hosts["h1"].profiles,
    )
    instances = {**snap.hosts["h1"].instances, "jerry-container": released}
    snap = state.FleetSnapshot(
        hosts={"h1": snap.hosts["h1"].model_copy(update={"instances": instances})}
    )
    made, snap = _converge(edited, snap, sites.REAL, **options)
    assert [(a.kind.value, a.object.name) for a in made.actions] == [
        ("stop", "jerry-container"),
        ("delete", "jerry-container"),
    ]
    assert "jerry-container" not in snap.hosts["h1"].instances


def test_lab_converges_and_keeps_hand_added_gpu_devices() -> None:
    lab = sites.Site(host_root="/lab", attach_gpus=False)
    _, snap = _converge(FLEET, _fresh(gpus=()), lab)
    jerry = snap.hosts["h1"].instances["jerry-container"]
    assert not any(dev.get("type") == "gpu" for dev in jerry.devices.values())
    assert "nvidia.runtime" not in snap.hosts["h1"].profiles["default"].config

    # a GPU device added by hand in the lab is neither drift nor removed by an update
    jerry = jerry.model_copy(
        update={
            "devices": {**jerry.devices, "gpu9": {"type": "gpu", "id": "9"}},
            "config": {**jerry.config, "limits.cpu": "1"},
        }
    )
    instances = {**snap.hosts["h1"].instances, "jerry-container": jerry}
    snap = state.FleetSnapshot(
        hosts={"h1": snap.hosts["h1"].model_copy(update={"instances": instances})}
    )
    made, snap = _converge(FLEET, snap, lab)
    assert [a.id for a in made.actions] == ["h1/instance/jerry-container/update"]
    assert "gpu9" in snap.hosts["h1"].instances["jerry-container"].devices


def test_put_request_keeps_what_the_plan_leaves_alone() -> None:
    body = planning.InstanceBody(
        profiles=("default",),
        config={"limits.cpu": "4"},
        devices={"home": {"type": "disk", "source": "/home/t", "path": "/h"}},
        preserve=rules.preserve_for(attach_gpus=False),
    )
    current = {
        "architecture": "x86_64",
        "description": "hand-written",
        "ephemeral": False,
        "stateful": False,
        "status": "Running",
        "profiles": ["default", "x"],
        "config": {
            "volatile.idmap.current": "[]",
            "image.os": "Ubuntu",
            "nvidia.runtime": "true",
            "limits.cpu": "2",
            "user.note": "x",
        },
        "devices": {"gpu0": {"type": "gpu"}, "old": {"type": "disk", "path": "/o"}},
    }
    assert requests.put_request(body, current) == {
        "architecture": "x86_64",
        "description": "hand-written",
        "ephemeral": False,
        "stateful": False,
        "profiles": ["default"],
        "config": {
            "volatile.idmap.current": "[]",
            "image.os": "Ubuntu",
            "nvidia.runtime": "true",
            "limits.cpu": "4",
        },
        "devices": {
            "gpu0": {"type": "gpu"},
            "home": {"type": "disk", "source": "/home/t", "path": "/h"},
        },
    }


def test_held_back_restart_is_valid_after_the_live_part() -> None:
    """The pending restart-update of a split change expects the container as the live update
    leaves it, so releasing the hold (a later policy) performs it without planning again."""
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    observed = {
        "h1": {
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "config": {"limits.cpu": "8", "raw.idmap": "uid 1 1000\ngid 1 1000"},
                }
            }
        }
    }
    snapshot = support.snapshot_from(observed, fleet, sites.REAL)
    made = planner.make_plan(fleet, snapshot, sites.REAL)
    assert [a.pending is None for a in made.actions] == [True, False, False, False]
    hosts = tuple(
        host.model_copy(
            update={"actions": tuple(a.model_copy(update={"pending": None}) for a in host.actions)}
        )
        for host in made.hosts
    )
    after = support.simulate_apply(made.model_copy(update={"hosts": hosts}), snapshot, fleet)
    assert planner.make_plan(fleet, after, sites.REAL).actions == ()


def test_fingerprint_ignores_power_state_and_lxd_keys() -> None:
    base = state.InstanceObs(
        name="c", status="Running", profiles=("default",), config={"limits.cpu": "2"}
    )
    stopped = base.model_copy(
        update={
            "status": "Stopped",
            "config": {"limits.cpu": "2", "volatile.last_state.power": "x"},
        }
    )
    changed = base.model_copy(update={"config": {"limits.cpu": "3"}})
    assert fingerprint.instance(base, None) == fingerprint.instance(stopped, None)
    assert fingerprint.instance(base, None) != fingerprint.instance(changed, None)
