"""A fleet with a real LXD cluster as one of its hosts (issue 13), against the local lab.

The lab makes the fleet host ``dept`` a real 2-member LXD cluster (``node1`` on 127.0.0.1 and
``node2`` on 127.0.0.2, each a lab host with its own system and sshd) next to a single host
``solo``. One scenario on a lab of its own, run in order, each step from where the last left
the hosts: apply places users on the members they name and one by the placement rule; a second
plan is empty; a changed ``member:`` moves a container inside the cluster with its root
filesystem (pending without ``--allow-restart``); with one member stopped, the plan and apply
still cover the other member and the single host and name the containers out of sight, and
status shows them unreachable; ``lab up`` brings the member back into the cluster.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.lab import lab_exec, lab_up, load_lab
from lxdgpu_reconcile.lab.cluster import members_status
from tests.integration.conftest import LAB_FLEET, bring_down, bring_up, new_lab_dir
from tests.integration.test_apply import World, actions

pytestmark = pytest.mark.lxd

NODE1, NODE2 = "dept/node1", "dept/node2"
#: How long a stopped member may take to be listed offline: LXD calls a member offline once it
#: has missed heartbeats for ``cluster.offline_threshold`` seconds (the lab sets 11; measured:
#: 7 s after ``lxd shutdown``, the heartbeat of the moment before counting too).
OFFLINE_WAIT = 60.0


def cluster_fleet() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(LAB_FLEET.read_text())
    certs = {"client_cert": "certs/client.crt", "client_key": "certs/client.key"}
    data["hosts"] = {
        "dept": {
            "endpoint": "https://192.0.2.21:8443",
            **certs,
            "server_cert": "certs/dept.crt",
            "cluster": {"members": ["node1", "node2"]},
        },
        "solo": {"endpoint": "https://192.0.2.22:8443", **certs, "server_cert": "certs/solo.crt"},
    }
    data["templates"]["base"]["build_host"] = "solo"
    user = {"template": "base"}
    data["users"] = {
        "erin": {"host": "dept", "member": "node2", **user, "uid": 2001, "gid": 2001},
        "frank": {"host": "dept", **user, "uid": 2002, "gid": 2002},
        "gina": {"host": "dept", "member": "node2", **user, "uid": 2003, "gid": 2003},
        "hank": {"host": "solo", **user, "uid": 2004, "gid": 2004},
    }
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fleet_path = tmp_path_factory.mktemp("clusters") / "fleet.yaml"
    fleet_path.write_text(yaml.safe_dump(cluster_fleet(), sort_keys=False))
    lab_dir = new_lab_dir()
    try:
        yield World(bring_up(fleet_path, lab_dir), fleet_path)
    finally:
        bring_down(lab_dir)


def listing(world: World) -> dict[str, tuple[str, str]]:
    """The cluster's instances as ``lxc list`` shows them: name -> (status, member)."""
    found = json.loads(world.lxc(NODE1, "list", "--format", "json"))
    return {i["name"]: (i["status"], i["location"]) for i in found}


def host_plan(plan: dict[str, Any], host: str) -> dict[str, Any]:
    (found,) = [h for h in plan["hosts"] if h["host"] == host]
    return found


def instance_actions(plan: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return [a for a in actions(plan, host) if a["object"]["kind"] == "instance"]


def test_the_lab_makes_a_real_cluster_with_shared_trust_and_images(world: World) -> None:
    state = world.handle.state
    assert state.clusters == {"dept": (NODE1, NODE2)}
    one, two = state.hosts[NODE1], state.hosts[NODE2]
    assert (one.address, two.address) == ("127.0.0.1", "127.0.0.2")
    assert members_status(one) == {"node1": "Online", "node2": "Online"}
    fleet = world.handle.fleet.hosts["dept"]
    assert fleet.endpoint == one.endpoint and fleet.cluster is not None
    assert fleet.cluster.endpoints == (two.endpoint,)
    assert fleet.cluster.ssh == {"node1": "dept-node1", "node2": "dept-node2"}
    assert Path(one.server_cert).read_bytes() == Path(two.server_cert).read_bytes()  # the cluster's
    # One import, seen from both members: the cluster shares its images.
    aliases = json.loads(world.lxc(NODE2, "image", "alias", "list", "--format", "json"))
    assert {a["name"] for a in aliases} >= {"busybox", "template-busybox"}
    assert state.hosts[NODE2].images == ()


def test_apply_places_named_users_on_their_member_and_the_others_by_the_rule(
    world: World,
) -> None:
    text = world.cli("plan").output
    assert "frank-container (on node1)" in text and "placed by the rule" in text, text
    assert "erin-container (on node2)" in text, text

    result = world.apply()
    assert result.exit_code == 0, result.output

    assert listing(world) == {
        "erin-container": ("Running", "node2"),
        "frank-container": ("Running", "node1"),
        "gina-container": ("Running", "node2"),
    }
    solo = json.loads(world.lxc("solo", "list", "--format", "json"))
    assert [(i["name"], i["status"]) for i in solo] == [("hank-container", "Running")]
    # The tool's host layer made each account (and its delegations) on its member's system,
    # over that member's lab sshd (hosts.dept.cluster.ssh).
    assert lab_exec(world.handle.dir, NODE2, ["getent", "passwd", "erin"]) == 0
    assert lab_exec(world.handle.dir, NODE1, ["getent", "passwd", "frank"]) == 0
    assert lab_exec(world.handle.dir, NODE2, ["grep", "-qx", "root:2003:1", "/etc/subuid"]) == 0


def test_a_second_plan_is_empty(world: World) -> None:
    result = world.cli("plan")
    assert result.exit_code == 0, result.output
    assert "No changes" in result.output, result.output


def test_a_changed_member_moves_the_container_with_its_root_filesystem(world: World) -> None:
    world.lxc(NODE1, "exec", "erin-container", "--", "sh", "-c", "echo thesis > /root/n.txt")
    world.edit(lambda data: data["users"]["erin"].update(member="node1"))

    assert "pending" in world.cli("plan").output  # an outage: needs --allow-restart
    plan = world.plan("--allow-restart")
    (move,) = instance_actions(plan, "dept")
    assert move["kind"] == "move" and move["body"]["member"] == "node1"
    assert (
        "~> instance erin-container  to member node1" in world.cli("plan", "--allow-restart").output
    )

    result = world.apply("--allow-restart")
    assert result.exit_code == 0, result.output

    assert listing(world)["erin-container"] == ("Running", "node1")
    kept = world.lxc(NODE1, "exec", "erin-container", "--", "cat", "/root/n.txt")
    assert kept.strip() == "thesis"
    assert "No changes" in world.cli("plan").output


def wait_offline(world: World, member: str) -> float:
    """Seconds until the first member lists ``member`` offline."""
    first = world.handle.state.hosts[NODE1]
    start = time.monotonic()
    while time.monotonic() - start < OFFLINE_WAIT:
        if members_status(first).get(member) == "Offline":
            return time.monotonic() - start
        time.sleep(0.5)
    pytest.fail(f"{member} was not listed offline within {OFFLINE_WAIT:.0f}s")


def test_with_a_member_stopped_the_rest_is_planned_and_applied(world: World) -> None:
    two = world.handle.state.hosts[NODE2]
    subprocess.run(
        ["lxd", "shutdown", "--timeout", "60"],
        env={"LXD_DIR": two.lxd_dir, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=True,
        timeout=90,
    )
    wait_offline(world, "node2")

    # Something to do on the member that answers and on the single host.
    def more_cpu(data: dict[str, Any]) -> None:
        for user in ("frank", "gina", "hank"):
            data["users"][user]["cpu"] = 2  # the lab machine has 2: 75% of it is 1

    world.edit(more_cpu)
    plan = world.plan()
    dept = json.dumps(host_plan(plan, "dept"))
    assert "gina-container is on member node2, which is offline" in dept, dept
    assert [a["object"]["name"] for a in instance_actions(plan, "dept")] == ["frank-container"], (
        dept
    )
    assert [a["object"]["name"] for a in instance_actions(plan, "solo")] == ["hank-container"]

    result = world.apply()
    assert result.exit_code == 0, result.output
    assert world.config(NODE1, "frank-container")["config"]["limits.cpu"] == "2"
    assert world.config("solo", "hank-container")["config"]["limits.cpu"] == "2"

    status = json.loads(world.cli("status", "--format", "json").stdout)
    rows = {row["name"]: row for row in status["containers"]}
    assert rows["gina-container"]["state"] == "unreachable"
    assert rows["gina-container"]["member"] == "node2"
    assert rows["frank-container"]["member"] == "node1"


def test_lab_up_brings_the_stopped_member_back_into_the_cluster(world: World) -> None:
    loaded = load_fleet(world.fleet_path)
    assert loaded.fleet is not None
    lab_up(loaded.fleet, world.handle.dir)
    state = load_lab(world.handle.dir)
    assert members_status(state.hosts[NODE1]) == {"node1": "Online", "node2": "Online"}
    plan = world.plan()
    (update,) = instance_actions(plan, "dept")  # gina's cpu, now that node2 is back
    assert update["object"]["name"] == "gina-container"
    result = world.apply()
    assert result.exit_code == 0, result.output
    assert "No changes" in world.cli("plan").output
