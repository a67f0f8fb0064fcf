"""Saved plans: preconditions recorded from the snapshot, and every way a plan goes stale, with
in-memory snapshots (no daemon)."""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner, saving
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.report import plan_json, saved_text
from tests.unit.planning import support

FLEET: dict[str, Any] = {
    "users": {
        "tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003},
        "amy": {"host": "h1", "template": "desk", "uid": 1004, "gid": 1004, "cuda": ["9.0"]},
        "ian": {"host": "h1", "template": "desk", "uid": 1005, "gid": 1005, "paused": True},
    }
}
OBSERVED: dict[str, Any] = {
    "h1": {
        "instances": {
            "tom-container": {
                "as_desired": True,
                "status": "Running",
                "config": {"limits.cpu": "8", "raw.idmap": "uid 1009 1000\ngid 1009 1000"},
            },
            "ian-container": {"as_desired": True, "status": "Running", "config": {"x.y": "1"}},
        }
    }
}
DIGEST = "ab" * 32


def _made(observed: dict[str, Any] = OBSERVED) -> tuple[planning.Plan, state.FleetSnapshot]:
    fleet = support.fleet_from(FLEET)
    site = support.site_from(None)
    snapshot = support.snapshot_from(observed, fleet, site)
    return planner.make_plan(fleet, snapshot, site), snapshot


def _saved() -> saving.SavedPlan:
    made, snapshot = _made()
    return saving.save(
        made,
        snapshot,
        fleet=saving.FleetFile(path="fleet.yaml", sha256=DIGEST),
        lab=None,
        tool_version="1.0",
        created_at="2026-01-01T00:00:00+00:00",
    )


def _now(change: Any) -> state.FleetSnapshot:
    """The plan's snapshot after ``change(host_snapshot_data)`` on h1."""
    _, snapshot = _made()
    data = snapshot.hosts["h1"].model_dump()
    change(data)
    return state.FleetSnapshot(hosts={"h1": state.HostSnapshot.model_validate(data)})


def _check(now: state.FleetSnapshot, **kwargs: str) -> tuple[saving.Stale, ...]:
    return saving.check(
        _saved(),
        now,
        fleet_sha256=kwargs.get("sha", DIGEST),
        tool_version=kwargs.get("version", "1.0"),
    )


def test_preconditions_cover_every_object_written_and_only_those() -> None:
    saved = _saved()
    got = {(p.object.kind.value, p.object.name): (p.exists, p.status) for p in saved.preconditions}
    assert got == {
        ("profile", "cuda-9.0"): (False, None),
        ("instance", "amy-container"): (False, None),
        ("instance", "tom-container"): (True, "Running"),
    }  # ian is paused: nothing of his is written, so nothing of his is checked
    tom = next(p for p in saved.preconditions if p.object.name == "tom-container")
    assert tom.fingerprint is not None and tom.fingerprint.startswith("sha256:")
    assert saved.hosts_to_check == ("h1",)


def test_an_unchanged_world_is_not_stale() -> None:
    assert _check(_now(lambda d: None)) == ()
    # A change to an object the plan does not write (paused ian) does not matter.
    assert _check(_now(lambda d: d["instances"]["ian-container"]["config"].update(z="2"))) == ()


def test_a_changed_object_is_stale_with_the_fields_that_changed() -> None:
    def by_hand(data: dict[str, Any]) -> None:
        config = data["instances"]["tom-container"]["config"]
        config["limits.cpu"] = "4"
        config["user.note"] = "x"

    (stale,) = _check(_now(by_hand))
    assert stale.object == ObjectRef(kind=ObjectKind.INSTANCE, name="tom-container")
    assert stale.message == "h1: instance tom-container changed on the host since the plan was made"
    assert [(c.dotted, c.old, c.new) for c in stale.changes] == [
        ("config.limits.cpu", "8", "4"),
        ("config.user.note", None, "x"),
    ]
    text = saved_text.lines((stale,), plan_file="plan.json", replan="lxdgpu-reconcile plan")
    assert text[0] == "plan.json is stale: nothing was applied."
    assert '      config.limits.cpu: "8" -> "4"' in text
    assert '      config.user.note: (absent) -> "x"' in text
    assert text[-1].startswith("Run plan again (lxdgpu-reconcile plan)")


def test_a_created_object_that_now_exists_is_stale() -> None:
    def made_by_hand(data: dict[str, Any]) -> None:
        data["instances"]["amy-container"] = {"name": "amy-container", "status": "Stopped"}
        data["profiles"]["cuda-9.0"] = {"name": "cuda-9.0"}

    messages = [s.message for s in _check(_now(made_by_hand))]
    assert messages == [
        "h1: profile cuda-9.0 exists now; the plan creates it",
        "h1: instance amy-container exists now; the plan creates it",
    ]


def test_a_deleted_or_stopped_object_is_stale() -> None:
    gone = _check(_now(lambda d: d["instances"].pop("tom-container")))
    assert [s.message for s in gone] == ["h1: instance tom-container is gone; the plan changes it"]
    stopped = _check(_now(lambda d: d["instances"]["tom-container"].update(status="Stopped")))
    assert [s.message for s in stopped] == [
        "h1: instance tom-container was Running when the plan was made and is Stopped now"
    ]


def test_fleet_file_version_and_unreadable_hosts_are_reported() -> None:
    unreadable = state.FleetSnapshot(
        hosts={
            "h1": state.HostSnapshot(
                host="h1",
                endpoint="unix:///x",
                error=state.HostError(kind=state.HostErrorKind.TIMEOUT, message="no answer"),
            )
        }
    )
    messages = [s.message for s in _check(unreadable, sha="cd" * 32, version="2.0")]
    assert messages == [
        "the plan was made by lxdgpu-reconcile 1.0; this is 2.0",
        "the fleet file fleet.yaml changed since the plan was made (sha256 abababababab then, "
        "cdcdcdcdcdcd now)",
        "h1 could not be read (timeout: no answer), so the plan cannot be checked against it",
    ]


def test_the_planned_state_is_rebuilt_for_restart_updates_too() -> None:
    fleet = support.fleet_from(FLEET)
    site = support.site_from(None)
    _, snapshot = _made()
    made = planner.make_plan(fleet, snapshot, site, allow_restart=True)
    saved = saving.save(
        made,
        snapshot,
        fleet=saving.FleetFile(path="f", sha256=DIGEST),
        lab=None,
        tool_version="1",
        created_at="now",
    )
    data = snapshot.hosts["h1"].model_dump()
    data["instances"]["tom-container"]["config"]["raw.idmap"] = "uid 1 1\ngid 1 1"
    now = state.FleetSnapshot(hosts={"h1": state.HostSnapshot.model_validate(data)})
    (stale,) = saving.check(saved, now, fleet_sha256=DIGEST, tool_version="1")
    assert [(c.dotted, c.new) for c in stale.changes] == [("config.raw.idmap", "uid 1 1\ngid 1 1")]


def test_render_and_parse_round_trip() -> None:
    saved = _saved()
    assert saving.parse(saving.render(saved), name="p.json") == saved


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("version: 1\nusers: {}\n", "p.json looks like a fleet file", id="fleet"),
        pytest.param("{not json", "p.json is not a saved plan (not JSON)", id="garbage"),
        pytest.param("[1, 2]", "p.json is not a saved plan", id="other-json"),
        pytest.param(
            '{"kind": "lxdgpu-reconcile-saved-plan", "format_version": 9}',
            "p.json is a saved plan of format 9",
            id="future-format",
        ),
        pytest.param(
            '{"kind": "lxdgpu-reconcile-saved-plan", "format_version": 1}',
            "p.json is not a valid saved plan (tool_version: Field required)",
            id="incomplete",
        ),
    ],
)
def test_what_is_not_a_saved_plan_says_so(text: str, message: str) -> None:
    with pytest.raises(saving.SavedPlanError) as caught:
        saving.parse(text, name="p.json")
    assert caught.value.message.startswith(message)
    assert "plan -f FLEET --out FILE" in caught.value.hint


def test_a_printed_json_plan_is_not_a_saved_plan() -> None:
    made, _ = _made()
    with pytest.raises(saving.SavedPlanError) as caught:
        saving.parse(plan_json.render(made), name="p.json")
    assert "printed by `plan --format json`" in caught.value.message
