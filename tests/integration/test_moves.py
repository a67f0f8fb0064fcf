"""Moves between hosts, renames, interrupted moves and the busy-GPU guard, against real LXD
daemons (the local lab, two hosts copying over https with LXD's own migration).

One scenario on a lab of its own, run in order, each step from where the last left the hosts:
a move with a file in the root filesystem, the source pruned, an interrupted move finished by
the next apply, a rename, a rename plus move, and a stand-in ``nvidia-smi`` that reports a busy
GPU holding a restart, a move and a prune delete until ``--force`` names the container.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute import moves as moving
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.lab import use_lab
from lxdgpu_reconcile.observe.reading import observe_fleet
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.state import TAG_MOVED_AT, TAG_MOVED_TO
from tests.integration.conftest import LAB_FLEET, bring_down, bring_up, new_lab_dir
from tests.integration.test_apply import World, actions

pytestmark = pytest.mark.lxd

#: A stand-in for ``nvidia-smi`` in a lab container (the lab has no GPU): one busy process.
FAKE_NVIDIA_SMI = "#!/bin/sh\necho '4242, python, 21504 MiB'\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fleet_path = tmp_path_factory.mktemp("moves") / "fleet.yaml"
    data = yaml.safe_load(LAB_FLEET.read_text())
    data["users"] = {"alice": {"host": "server01", "template": "base", "uid": 1003, "gid": 1003}}
    fleet_path.write_text(yaml.safe_dump(data, sort_keys=False))
    lab_dir = new_lab_dir()
    try:
        made = World(bring_up(fleet_path, lab_dir), fleet_path)
        result = made.apply()
        assert result.exit_code == 0, result.output
        yield made
    finally:
        bring_down(lab_dir)


def names(world: World, host: str) -> dict[str, str]:
    listing = json.loads(world.lxc(host, "list", "--format", "json"))
    return {i["name"]: i["status"] for i in listing}


def instance_actions(plan: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return [a for a in actions(plan, host) if a["object"]["kind"] == "instance"]


def set_user(world: World, **fields: Any) -> None:
    world.edit(lambda data: data["users"]["alice"].update(fields))


def test_a_changed_host_moves_the_container_with_its_root_filesystem(world: World) -> None:
    world.lxc("server01", "exec", "alice-container", "--", "sh", "-c", "echo thesis > /root/n.txt")
    set_user(world, host="server02")

    plan = world.plan()
    (move,) = instance_actions(plan, "server02")
    assert move["kind"] == "move" and move["body"]["source_host"] == "server01"
    assert instance_actions(plan, "server01") == []
    assert "pending" in world.cli("plan").output  # a move needs --allow-restart
    text = world.cli("plan", "--allow-restart").output
    assert "~> instance alice-container  server01 -> server02" in text
    assert "the home directory does not move" in text

    result = world.apply("--allow-restart")
    assert result.exit_code == 0, result.output

    assert names(world, "server02") == {"alice-container": "Running"}
    out = world.lxc("server02", "exec", "alice-container", "--", "cat", "/root/n.txt")
    assert out.strip() == "thesis"
    moved = world.config("server02", "alice-container")
    assert moved["config"]["raw.idmap"] == "uid 1003 1000\ngid 1003 1000"
    assert moved["config"]["user.lxdgpu.created-as"] == "server02/alice-container"
    assert moved["devices"]["home"]["source"] == "/home/alice"  # server02's own /home
    assert world.home("server02", "alice").is_dir()  # made there by the host layer
    source = world.config("server01", "alice-container")
    assert names(world, "server01") == {"alice-container": "Stopped"}
    assert source["config"][TAG_MOVED_TO] == "server02/alice-container"
    assert TAG_MOVED_AT in source["config"]
    status = json.loads(world.cli("status", "--format", "json").stdout)
    (row,) = [c for c in status["containers"] if c["host"] == "server01"]
    assert row["moved_to"] == "server02" and row["state"] == "stopped"

    again = world.plan()
    assert [a for h in again["hosts"] for a in h["actions"]] == []

    pruned = world.apply("--prune")
    assert pruned.exit_code == 0, pruned.output
    assert names(world, "server01") == {}
    assert names(world, "server02") == {"alice-container": "Running"}


def test_a_move_killed_after_the_copy_is_finished_by_the_next_apply(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_user(world, host="server01")
    fleet, site = use_lab(_fleet(world), world.handle.dir)
    made = planner.make_plan(fleet, observe_fleet(fleet), site, allow_restart=True)

    def killed(*args: Any, **kwargs: Any) -> list[str]:
        raise KeyboardInterrupt  # the tool dies between the copy and the start

    monkeypatch.setattr(moving, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
        executor.apply_plan(
            made,
            fleet,
            authority=executor.Authority(host_root=site.host_root, own_homes=site.own_homes),
            timeout=120,
        )
    monkeypatch.undo()
    assert names(world, "server01") == {"alice-container": "Stopped"}  # the copy
    assert names(world, "server02") == {"alice-container": "Stopped"}  # the source
    plan = world.plan()
    (finish,) = instance_actions(plan, "server01")
    assert finish["kind"] == "move" and finish["pending"] is None
    assert "finishes an interrupted move" in finish["reason"]

    result = world.apply()
    assert result.exit_code == 0, result.output
    assert names(world, "server01") == {"alice-container": "Running"}
    assert names(world, "server02") == {"alice-container": "Stopped"}
    out = world.lxc("server01", "exec", "alice-container", "--", "cat", "/root/n.txt")
    assert out.strip() == "thesis"
    assert world.apply("--prune").exit_code == 0
    assert names(world, "server02") == {}


def test_a_rename_keeps_the_root_filesystem_and_a_rename_plus_move_too(world: World) -> None:
    set_user(world, container="alice-box")
    plan = world.plan("--allow-restart")
    (rename,) = instance_actions(plan, "server01")
    assert rename["kind"] == "rename"
    assert world.apply("--allow-restart").exit_code == 0
    assert names(world, "server01") == {"alice-box": "Running"}
    out = world.lxc("server01", "exec", "alice-box", "--", "cat", "/root/n.txt")
    assert out.strip() == "thesis"
    assert world.config("server01", "alice-box")["config"]["user.lxdgpu.created-as"] == (
        "server01/alice-box"
    )

    set_user(world, container="alice-ws", host="server02")
    (move,) = instance_actions(world.plan("--allow-restart"), "server02")
    assert move["kind"] == "move" and move["body"]["source_name"] == "alice-box"
    assert world.apply("--allow-restart").exit_code == 0
    assert names(world, "server02") == {"alice-ws": "Running"}
    out = world.lxc("server02", "exec", "alice-ws", "--", "cat", "/root/n.txt")
    assert out.strip() == "thesis"
    assert world.plan()["summary"]["pending"] == 0
    assert world.apply("--prune").exit_code == 0
    assert names(world, "server01") == {}


def test_a_busy_gpu_holds_a_restart_a_move_and_a_delete_until_forced(world: World) -> None:
    world.handle.lxc(
        "server02",
        "exec",
        "alice-ws",
        "--",
        "sh",
        "-c",
        "mkdir -p /usr/local/bin && cat > /usr/local/bin/nvidia-smi "
        "&& chmod 755 /usr/local/bin/nvidia-smi",
        input=FAKE_NVIDIA_SMI,
    )
    # A move is refused while the GPU is busy.
    set_user(world, host="server01")
    plan = world.plan("--allow-restart")
    (move,) = instance_actions(plan, "server01")
    assert move["hold"] == "gpu-busy"
    assert move["pending"].startswith("GPU busy: 1 process, python 21 GiB")
    refused = world.apply("--allow-restart")
    assert "GPU busy: 1 process, python 21 GiB" in refused.output
    assert names(world, "server02") == {"alice-ws": "Running"}
    assert names(world, "server01") == {}
    # So is a restart (raw.idmap is applied at start: alice's ids now map onto container uid
    # 1001) and the stop before a prune delete.
    set_user(world, host="server02")
    world.edit(lambda data: data["defaults"].update(container_uid=1001))
    restart = world.apply("--allow-restart")
    assert "GPU busy" in restart.output and names(world, "server02") == {"alice-ws": "Running"}
    world.edit(lambda data: data.pop("users"))
    world.lxc("server02", "config", "set", "alice-ws", "security.protection.delete=false")
    delete = world.apply("--prune")
    assert "GPU busy" in delete.output and names(world, "server02") == {"alice-ws": "Running"}
    # --force NAME lets it go.
    forced = world.apply("--prune", "--force", "alice-ws")
    assert forced.exit_code == 0, forced.output
    assert names(world, "server02") == {}


def _fleet(world: World) -> Any:
    loaded = load_fleet(world.fleet_path)
    assert loaded.fleet is not None
    return loaded.fleet
