"""``defaults.container_user``: the user inside every container, whose home holds the mounts."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired
from tests.unit.planning import support

TOM = {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1005}}}


def _tom(defaults: dict[str, Any]) -> desired.DesiredInstance:
    fleet = support.fleet_from({**TOM, "defaults": defaults})
    snap = state.HostSnapshot.model_validate({"host": "h1", "endpoint": "unix:///x", "cpus": 8})
    hosts = desired.expand(fleet, state.FleetSnapshot(hosts={"h1": snap}), sites.REAL).hosts
    return hosts["h1"].instances["tom-container"]


def test_the_home_is_mounted_in_the_container_users_home() -> None:
    assert _tom({}).devices["home"]["path"] == "/home/ubuntu/tom"


def test_another_container_user_moves_the_default_mount() -> None:
    tom = _tom({"container_user": "student", "container_uid": 1001})
    assert tom.devices["home"] == {
        "type": "disk",
        "source": "/home/tom",
        "path": "/home/student/tom",
    }
    assert tom.config["raw.idmap"] == "uid 1003 1001\ngid 1005 1001"


def test_an_explicit_home_path_may_name_the_container_user() -> None:
    tom = _tom({"container_user": "lab", "home_path": "/srv/{container_user}/homes/{user}"})
    assert tom.devices["home"]["path"] == "/srv/lab/homes/tom"
    assert _tom({"home_path": "/data/{user}"}).devices["home"]["path"] == "/data/tom"
