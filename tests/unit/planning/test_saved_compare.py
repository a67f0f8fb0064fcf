"""A saved plan is applied only when it equals the plan made now (``saving.compare``): an edited
plan file is refused, naming every action added, removed or different and the field."""

from __future__ import annotations

import json
from typing import Any

from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner, saving
from lxdgpu_reconcile.report import saved_text
from tests.unit.planning import support

FLEET: dict[str, Any] = {
    "users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003, "cpu": 2}}
}
OBSERVED: dict[str, Any] = {
    "h1": {
        "instances": {
            "tom-container": {
                "as_desired": True,
                "status": "Running",
                "config": {"limits.cpu": "4"},
            },
            "stray": {"status": "Running", "config": {"limits.cpu": "1"}},
        }
    }
}
UPDATE = "h1/instance/tom-container/update"


def _made() -> planning.Plan:
    fleet = support.fleet_from(FLEET)
    site = support.site_from(None)
    return planner.make_plan(fleet, support.snapshot_from(OBSERVED, fleet, site), site)


def _edited(change: Any) -> planning.Plan:
    """The plan as a plan file holds it, after ``change(data)`` edited its JSON."""
    data = json.loads(json.dumps(_made().model_dump(mode="json")))
    change(data)
    return planning.Plan.model_validate(data)


def _action(data: dict[str, Any], action_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        a for h in data["hosts"] for a in h["actions"] if a["id"] == action_id
    )
    return found


def test_the_same_plan_has_no_difference() -> None:
    made = _made()
    assert [a.id for a in made.actions] == [UPDATE]
    assert saving.compare(_edited(lambda d: None), made) == ()


def test_a_privileged_key_added_to_a_body_is_named_with_its_field() -> None:
    def privileged(data: dict[str, Any]) -> None:
        _action(data, UPDATE)["body"]["config"]["security.privileged"] = "true"

    (found,) = saving.compare(_edited(privileged), _made())
    assert found.host == "h1" and found.object is not None
    assert found.object.name == "tom-container"
    assert f"action {UPDATE} differs" in found.message
    assert 'body.config.security.privileged: "true" in the plan file, (absent) now' in (
        found.message
    )


def test_a_delete_added_with_the_summary_saying_none_is_named() -> None:
    def delete_stray(data: dict[str, Any]) -> None:
        data["hosts"][0]["actions"].append(
            {
                "id": "h1/instance/stray/delete",
                "kind": "delete",
                "host": "h1",
                "object": {"kind": "instance", "name": "stray"},
                "adopt": True,
            }
        )
        assert data["summary"]["delete"] == 0  # the summary still says: 0 to delete

    found = saving.compare(_edited(delete_stray), _made())
    (added,) = found
    assert "action h1/instance/stray/delete (delete instance stray) is added in the plan file" in (
        added.message
    )
    assert added.object is not None and added.object.name == "stray"

    def summary_too(data: dict[str, Any]) -> None:
        delete_stray(data)
        data["summary"]["delete"] = 1

    messages = [s.message for s in saving.compare(_edited(summary_too), _made())]
    assert "summary.delete: 1 in the plan file, 0 now" in messages


def test_a_removed_action_changed_options_and_order_are_named() -> None:
    def remove(data: dict[str, Any]) -> None:
        data["hosts"][0]["actions"] = []
        data["options"]["prune"] = True

    messages = [s.message for s in saving.compare(_edited(remove), _made())]
    assert "options.prune: true in the plan file, false now" in messages
    assert any(f"action {UPDATE} (update instance tom-container) is removed" in m for m in messages)


def test_the_refusal_names_the_differences_in_text() -> None:
    def privileged(data: dict[str, Any]) -> None:
        _action(data, UPDATE)["body"]["config"]["security.privileged"] = "true"

    found = saving.compare(_edited(privileged), _made())
    text = saved_text.lines(
        found,
        plan_file="plan.json",
        replan="lxdgpu-reconcile plan --out plan.json",
        headline="plan.json is not the plan that its fleet file and the hosts give now",
    )
    assert text[0].startswith("plan.json is not the plan")
    assert any("security.privileged" in line for line in text)
    assert text[-1].startswith("Run plan again")
