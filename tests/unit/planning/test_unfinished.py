"""A container whose create never finished (LXD killed mid-create): recognised from its observed
state (``planning.unfinished``), deleted and created again without ``--prune``, and applied over
the in-memory LXD with the real executor, which lifts the container's delete protection first.
"""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.unfinished import is_unfinished
from tests.fakes.fleet import FakeFleet
from tests.unit.planning import support

FLEET = support.fleet_from(
    {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
)
#: What LXD 5.0 showed for a container whose create was killed before its root filesystem was
#: unpacked: in the database, Stopped, never started, without ``volatile.apply_template``.
HALF_MADE = {
    "as_desired": True,
    "status": "Stopped",
    "config": {"volatile.apply_template": None},
}


def plan(observed: dict[str, Any], **options: Any) -> tuple[plans.Plan, state.FleetSnapshot]:
    snapshot = support.snapshot_from({"h1": observed}, FLEET, sites.REAL)
    return planner.make_plan(FLEET, snapshot, sites.REAL, **options), snapshot


def test_a_half_made_container_is_deleted_and_created_again_without_prune() -> None:
    made, _ = plan({"instances": {"tom-container": HALF_MADE}})

    kinds = [(a.kind, a.id.rsplit("/", 1)[-1]) for a in made.actions]
    assert kinds == [
        (plans.ActionKind.DELETE, "recreate-delete"),
        (plans.ActionKind.CREATE, "create"),
        (plans.ActionKind.START, "start"),
    ]
    delete, create, _ = made.actions
    assert not any(a.pending for a in made.actions)
    assert delete.part_of == create.id and delete.id in create.depends_on
    assert "create never finished" in delete.reason
    assert made.summary.create == 1 and made.summary.delete == 0


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        ("Stopped", {"volatile.apply_template": "create"}),  # created, never started: whole
        ("Stopped", {"volatile.last_state.power": "STOPPED"}),  # it has run
        ("Running", {}),
        ("Stopped", {"user.lxdgpu.managed": None}),  # not the tool's
        ("Stopped", {"user.lxdgpu.role": "build"}),  # not a user container
        ("Stopped", {"volatile.base_image": None}),  # not created from an image
    ],
)
def test_only_a_tool_container_never_started_without_its_root_filesystem_counts(
    status: str, extra: dict[str, str | None]
) -> None:
    config = dict(support.LXD_ADDED)
    config.update({state.TAG_MANAGED: "true", state.TAG_ROLE: "container"})
    del config["volatile.apply_template"]
    assert is_unfinished("Stopped", config)
    for key, value in extra.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    assert not is_unfinished(status, config)


def test_the_recreate_applies_over_lxd_and_the_next_plan_is_empty() -> None:
    made, snapshot = plan({"instances": {"tom-container": HALF_MADE}})
    hosts = FakeFleet(snapshot)

    report = executor.apply_plan(made, FLEET, timeout=5.0, connect=hosts.connect)

    assert [r.outcome for r in report.results] == [Outcome.DONE] * 3, report.results
    after = hosts.hosts["h1"].snapshot()
    assert after.instances["tom-container"].running
    again = planner.make_plan(FLEET, state.FleetSnapshot(hosts={"h1": after}), sites.REAL)
    assert again.actions == ()


def test_a_container_that_ran_in_the_meantime_is_not_deleted() -> None:
    made, snapshot = plan({"instances": {"tom-container": HALF_MADE}})
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].instances["tom-container"]["config"]["volatile.last_state.power"] = "STOPPED"

    report = executor.apply_plan(made, FLEET, timeout=5.0, connect=hosts.connect)

    delete = report.results[0]
    assert delete.outcome is Outcome.FAILED and "nothing was deleted" in delete.message
    assert "tom-container" in hosts.hosts["h1"].instances
    assert hosts.hosts["h1"].writes == []
