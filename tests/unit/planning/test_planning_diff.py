"""Normalisation and field changes; ``apply_changes`` undoes ``diff``."""

from __future__ import annotations

import itertools

import pytest

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import diff, rules

REAL = rules.preserve_for(attach_gpus=True)
LAB = rules.preserve_for(attach_gpus=False)


def _obs(**kwargs: object) -> state.InstanceObs:
    return state.InstanceObs.model_validate({"name": "c", "status": "Running", **kwargs})


def test_lxd_owned_keys_and_expanded_views_are_not_compared() -> None:
    obs = _obs(
        profiles=["default"],
        config={"limits.cpu": "4", "volatile.uuid": "x", "image.os": "Ubuntu"},
        expanded_config={"limits.cpu": "4", "nvidia.runtime": "true", "volatile.uuid": "x"},
        expanded_devices={"root": {"type": "disk", "path": "/", "pool": "default"}},
    )
    want = diff.essence(config={"limits.cpu": "4"}, devices={}, profiles=["default"], preserve=REAL)
    assert diff.diff(want, diff.instance_essence(obs, REAL)) == ()


def test_lab_ignores_gpu_devices_and_nvidia_keys_on_both_sides() -> None:
    obs = _obs(
        config={"nvidia.runtime": "true"},
        devices={"gpu0": {"type": "gpu", "id": "0"}, "home": {"type": "disk", "path": "/h"}},
    )
    want = diff.essence(
        config={"nvidia.runtime": "false"},
        devices={"gpu1": {"type": "gpu", "id": "1"}, "home": {"type": "disk", "path": "/h"}},
        profiles=[],
        preserve=LAB,
    )
    assert diff.diff(want, diff.instance_essence(obs, LAB)) == ()
    assert diff.diff(want, diff.instance_essence(obs, REAL)) != ()


def test_devices_compare_by_name_then_key() -> None:
    have = diff.Essence(
        devices={
            "home": {"type": "disk", "source": "/a", "path": "/h"},
            "old": {"type": "disk", "source": "/o", "path": "/o"},
            "net": {"type": "nic", "nictype": "macvlan", "parent": "eno1"},
        }
    )
    want = diff.Essence(
        devices={
            "home": {"type": "disk", "source": "/b", "path": "/h", "readonly": "true"},
            "new": {"type": "disk", "source": "/n", "path": "/n"},
            "net": {"type": "none"},
        }
    )
    changes = diff.diff(want, have)
    assert [(c.dotted, c.old, c.new) for c in changes] == [
        ("devices.home.readonly", None, "true"),
        ("devices.home.source", "/a", "/b"),
        ("devices.net", {"nictype": "macvlan", "parent": "eno1", "type": "nic"}, {"type": "none"}),
        ("devices.new", None, {"path": "/n", "source": "/n", "type": "disk"}),
        ("devices.old", {"path": "/o", "source": "/o", "type": "disk"}, None),
    ]


def test_change_order_and_timing() -> None:
    have = diff.Essence(profiles=("default",), config={"raw.idmap": "a", "limits.cpu": "2"})
    want = diff.Essence(profiles=("default", "cuda-9.0"), config={"raw.idmap": "b", "user.x": "1"})
    changes = diff.diff(want, have)
    assert [(c.dotted, c.timing) for c in changes] == [
        ("profiles", rules.Timing.LIVE),
        ("config.limits.cpu", rules.Timing.LIVE),
        ("config.raw.idmap", rules.Timing.AT_START),
        ("config.user.x", rules.Timing.STORED),
    ]


def test_empty_and_missing_description_are_equal() -> None:
    assert diff.diff(diff.Essence(description=""), diff.Essence()) == ()
    assert diff.diff(diff.Essence(description="x"), diff.Essence())[0].old is None


ESSENCES = [
    diff.Essence(),
    diff.Essence(description="", profiles=("default",), config={"a": "1", "b": "2"}),
    diff.Essence(
        description="d",
        profiles=("default", "cuda-9.0"),
        config={"b": "3", "c": "4"},
        devices={"home": {"type": "disk", "source": "/a", "path": "/h"}, "g": {"type": "gpu"}},
    ),
    diff.Essence(
        profiles=(),
        devices={"home": {"type": "disk", "source": "/b", "path": "/h"}, "g": {"type": "none"}},
    ),
]


@pytest.mark.parametrize(
    ("want", "have"), list(itertools.permutations(ESSENCES, 2)), ids=lambda e: "e"
)
def test_apply_changes_undoes_diff(want: diff.Essence, have: diff.Essence) -> None:
    after = diff.apply_changes(have, diff.diff(want, have))
    assert diff.diff(want, after) == ()
