"""Planning a large fleet: models made in bulk without validation equal the validated ones, the
cyclic garbage collector is paused while a plan is made, what every host shares is computed
once, and looking for a container's move source looks at its user's containers only."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from lxdgpu_reconcile import state
from lxdgpu_reconcile.gcpause import gc_paused
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff, move_steps, planner, rules
from lxdgpu_reconcile.planning.bulk import trusted
from lxdgpu_reconcile.planning.common import PowerState
from lxdgpu_reconcile.planning.model import CreateInstanceBody
from tests.unit.planning.support import fleet_from, site_from, snapshot_from

CASES: list[tuple[type[Any], dict[str, Any], tuple[str, ...] | None]] = [
    (
        diff.FieldChange,
        {"path": ("config", "limits.cpu"), "old": None, "new": "4", "timing": rules.Timing.LIVE},
        None,
    ),
    (
        diff.Essence,
        {
            "description": None,
            "profiles": ("default", "cuda-12-4"),
            "config": {"limits.cpu": "4"},
            "devices": {"home": {"path": "/home/u", "type": "disk"}},
        },
        None,
    ),
    (
        desiring.DesiredInstance,
        {
            "host": "h1",
            "name": "tom-container",
            "user": "tom",
            "template": "desk",
            "alias": "tpl-desk",
            "profiles": ("default",),
            "config": {"raw.idmap": "both 1003 1000"},
            "devices": {"home": {"type": "disk"}},
            "state": PowerState.RUNNING,
            "paused": False,
            "member": None,
            "placement": "",
            "container_user": "ubuntu",
            "vnc": False,
        },
        None,
    ),
    (
        CreateInstanceBody,
        {
            "body": "create-instance",
            "name": "tom-container",
            "alias": "tpl-desk",
            "profiles": ("default",),
            "config": {"a": "b"},
            "devices": {},
            "first_password": "ubuntu",
            "vnc": True,
            "target": "node2",
        },
        ("name", "alias", "profiles", "config", "devices", "first_password", "vnc", "target"),
    ),
]


@pytest.mark.parametrize(
    ("cls", "fields", "given"), CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_a_trusted_model_is_the_validated_one(
    cls: type[Any], fields: dict[str, Any], given: tuple[str, ...] | None
) -> None:
    passed = fields if given is None else {k: v for k, v in fields.items() if k in given}
    validated = cls(**passed)
    made = trusted(cls, dict(fields), given)
    assert made == validated
    assert made.model_dump(mode="json") == validated.model_dump(mode="json")
    assert made.model_dump_json() == validated.model_dump_json()
    assert made.model_fields_set == validated.model_fields_set


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_pauses_and_restores_the_collector(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


FLEET = {
    "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd/unix.socket"}},
    "users": {
        f"u{i}": {
            "host": "h1" if i % 2 else "h2",
            "template": "desk",
            "uid": 2000 + i,
            "gid": 2000 + i,
        }
        for i in range(40)
    },
}


def _scenario() -> tuple[Any, Any, Any]:
    fleet = fleet_from(FLEET)
    site = site_from(None)
    snapshot = snapshot_from({"h1": {}, "h2": {}}, fleet, site)
    return fleet, snapshot, site


def test_a_plan_is_made_with_the_cyclic_collector_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet, snapshot, site = _scenario()
    seen: list[bool] = []
    expand = desiring.expand

    def watching(*args: Any, **kwargs: Any) -> desiring.DesiredState:
        seen.append(gc.isenabled())
        return expand(*args, **kwargs)

    monkeypatch.setattr(desiring, "expand", watching)
    assert gc.isenabled()
    planner.make_plan(fleet, snapshot, site)
    assert seen == [False]
    assert gc.isenabled()


def test_what_every_host_carries_alike_is_computed_once() -> None:
    fleet, snapshot, site = _scenario()
    want = desiring.expand(fleet, snapshot, site)
    assert want.hosts["h1"].container_names is want.hosts["h2"].container_names
    assert want.hosts["h1"].container_names == {u: f"{u}-container" for u in FLEET["users"]}


def test_move_sources_are_looked_for_among_the_users_own_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet, empty, site = _scenario()
    want = desiring.expand(fleet, empty, site)
    hosts = {}
    for name, snap in empty.hosts.items():
        # Tagged with their users under names the fleet does not want (copies): every one is
        # a candidate source of its user's container only.
        running = {
            f"{i.name}-old": state.InstanceObs(
                name=f"{i.name}-old", status="Running", config=i.config
            )
            for i in want.hosts[name].instances.values()
        }
        hosts[name] = snap.model_copy(update={"instances": running})
    snapshot = state.FleetSnapshot(hosts=hosts)
    checked: list[str] = []
    own = move_steps._own

    def counting(obs: state.InstanceObs, user: str) -> bool:
        checked.append(obs.name)
        return own(obs, user)

    monkeypatch.setattr(move_steps, "_own", counting)
    assert move_steps.find_moves(want, snapshot).to == {}
    assert len(checked) <= len(FLEET["users"])  # not users x containers
