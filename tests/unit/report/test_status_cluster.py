"""``status`` of a cluster host: each container with its member, a container on a member that
is down as ``unreachable``, and the members in the JSON."""

from __future__ import annotations

from rich.console import Console

from lxdgpu_reconcile import state
from lxdgpu_reconcile.report import status
from tests.unit.planning import support

FLEET = support.fleet_from(
    {
        "hosts": {"dept": {"endpoint": "unix:///x", "cluster": {}}},
        "users": {
            "erin": {"host": "dept", "template": "desk", "uid": 2001, "gid": 2001},
            "frank": {"host": "dept", "template": "desk", "uid": 2002, "gid": 2002},
        },
    }
)
SNAPSHOT = state.FleetSnapshot(
    hosts={
        "dept": state.HostSnapshot(
            host="dept",
            endpoint="unix:///x",
            members=(
                state.MemberObs(name="node1", status="Online", cpus=8),
                state.MemberObs(name="node2", status="Offline"),
            ),
            instances={
                "frank-container": state.InstanceObs(
                    name="frank-container", status="Running", location="node1"
                )
            },
            unseen={"erin-container": "node2"},
        )
    }
)


def test_status_json_names_each_containers_member_and_the_unseen_ones() -> None:
    data = status.status_json(FLEET, SNAPSHOT)
    rows = {row["name"]: row for row in data["containers"]}
    assert rows["frank-container"]["member"] == "node1"
    assert rows["erin-container"]["state"] == "unreachable"
    assert rows["erin-container"]["member"] == "node2"
    assert rows["erin-container"]["user"] == "erin"
    (host,) = data["hosts"]
    assert [(m["name"], m["status"], m["cpus"]) for m in host["members"]] == [
        ("node1", "Online", 8),
        ("node2", "Offline", None),
    ]


def test_status_table_shows_the_member_of_each_container() -> None:
    console = Console(width=200, record=True)
    console.print(status.status_table(FLEET, SNAPSHOT))
    text = console.export_text()
    assert "frank-container (node1)" in text
    assert "erin-container (node2)" in text and "unreachable" in text
