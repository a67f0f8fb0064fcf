"""Plan and apply against real LXD daemons: the lab guide's whole container setup, end to end.

One scenario on a lab of its own (two hosts, three users, CUDA versions, homes, uid mapping),
run in order: apply from empty, edit the fleet, drift by hand, an untagged container, a stale
plan, a failure on one host, and a removed user. Each step starts from where the last one left
the hosts, as an admin's day does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import Outcome
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.lab import lab_up, use_lab
from lxdgpu_reconcile.observe.reading import observe_fleet
from lxdgpu_reconcile.planning import planner
from tests.integration.conftest import LAB_FLEET, LabHandle, bring_down, bring_up, new_lab_dir

pytestmark = pytest.mark.lxd


@dataclass
class World:
    handle: LabHandle
    fleet_path: Path

    @property
    def root(self) -> Path:
        return Path(self.handle.state.host_root)

    def home(self, host: str, user: str) -> Path:
        """``user``'s home in lab host ``host``'s own /home, seen from this machine."""
        return Path(self.handle.state.hosts[host].system or "") / "home" / user

    def cli(self, *args: str) -> Result:
        """Run the command line against this lab (``-f`` and ``--lab`` added)."""
        argv = [*args, "-f", str(self.fleet_path), "--lab", str(self.handle.dir)]
        return CliRunner().invoke(app, argv, catch_exceptions=False)

    def plan(self, *args: str) -> dict[str, Any]:
        result = self.cli("plan", "--format", "json", *args)
        assert result.exit_code in (0, 2), result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def apply(self, *args: str) -> Result:
        return self.cli("apply", "--yes", *args)

    def lxc(self, host: str, *args: str, check: bool = True) -> str:
        return self.handle.lxc(host, *args, check=check).stdout

    def config(self, host: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(self.lxc(host, "config", "show", name))
        return data

    def edit(self, change: Any) -> None:
        """Change the fleet file: ``change(data)`` edits the parsed YAML in place."""
        data = yaml.safe_load(self.fleet_path.read_text())
        change(data)
        self.fleet_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def relab(self) -> None:
        """``lab up`` again for the edited fleet (what a new host, template or NIC parent needs)."""
        loaded = load_fleet(self.fleet_path)
        assert loaded.fleet is not None, loaded.problems
        lab_up(loaded.fleet, self.handle.dir)


def actions(plan: dict[str, Any], host: str) -> list[dict[str, Any]]:
    return [a for h in plan["hosts"] if h["host"] == host for a in h["actions"]]


def changes(action: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {".".join(c["path"]): (c["old"], c["new"]) for c in action["changes"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fleet_path = tmp_path_factory.mktemp("apply") / "fleet.yaml"
    fleet_path.write_text(LAB_FLEET.read_text())
    lab_dir = new_lab_dir()
    try:
        yield World(bring_up(fleet_path, lab_dir), fleet_path)
    finally:
        bring_down(lab_dir)


def test_apply_from_empty_sets_up_every_container(world: World) -> None:
    result = world.apply()
    assert result.exit_code == 0, result.output
    assert "lab: GPUs are not attached" in result.output
    assert "Apply complete:" in result.output and " 0 failed" in result.output

    tom = world.config("server01", "tom-container")
    assert tom["profiles"] == ["default", "cuda-10.0"]
    assert tom["config"]["raw.idmap"] == "uid 1003 1000\ngid 1003 1000"
    cpus = json.loads(world.lxc("server01", "query", "/1.0/resources"))["cpu"]["total"]
    assert tom["config"]["limits.cpu"] == str(max(1, cpus * 3 // 4))  # 75% of the host's CPUs
    assert tom["config"]["security.protection.delete"] == "true"
    assert tom["config"]["user.lxdgpu.managed"] == "true"
    assert tom["config"]["user.lxdgpu.user"] == "tom"
    assert tom["config"]["user.lxdgpu.spec-hash"].startswith("sha256:")
    assert tom["devices"]["home"] == {
        "type": "disk",
        "source": "/home/tom",  # in server01's own /home
        "path": "/home/ubuntu/tom",
    }
    jerry = world.config("server01", "jerry-container")
    assert jerry["profiles"] == ["default", "cuda-9.0", "cuda-10.0"]
    assert world.config("server02", "spike-container")["profiles"] == ["default"]

    cuda = yaml.safe_load(world.lxc("server01", "profile", "show", "cuda-10.0"))
    assert cuda["devices"]["cuda-10.0"]["path"] == "/usr/local/cuda-10.0"
    assert cuda["devices"]["cuda-10.0"]["readonly"] == "true"
    default = yaml.safe_load(world.lxc("server02", "profile", "show", "default"))
    assert default["devices"]["eth0"]["nictype"] == "macvlan"
    assert default["config"]["boot.autostart"] == "true"
    assert "gpu" not in default["devices"]  # the lab attaches no GPU

    listing = json.loads(world.lxc("server01", "list", "--format", "json"))
    assert {i["name"]: i["status"] for i in listing} == {
        "jerry-container": "Running",
        "tom-container": "Running",
    }
    # The CUDA tree and MATLAB are mounted read-only; the home is the user's own.
    mounts = world.lxc("server01", "exec", "jerry-container", "--", "cat", "/proc/mounts")
    assert "/usr/local/cuda-9.0" in mounts and "/usr/local/MATLAB" in mounts


def test_a_file_written_as_the_container_user_belongs_to_the_host_user(world: World) -> None:
    world.lxc(
        "server01",
        "exec",
        "tom-container",
        "--user",
        "1000",
        "--group",
        "1000",
        "--",
        "sh",
        "-c",
        "echo hello > /home/ubuntu/tom/from-the-container",
    )
    made = (world.home("server01", "tom") / "from-the-container").stat()
    assert (made.st_uid, made.st_gid) == (1003, 1003)


def test_second_plan_is_empty(world: World) -> None:
    result = world.cli("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "No changes" in result.output


def test_fleet_edit_plans_exactly_those_changes_and_marks_the_restart(world: World) -> None:
    def change(data: dict[str, Any]) -> None:
        data["users"]["tom"]["cpu"] = 2
        data["users"]["jerry"]["cuda"] = ["10.0"]
        data["users"]["spike"]["uid"] = 1006

    world.edit(change)
    # spike's account on server02 has uid 1005: the tool never changes an account's uid, so
    # server02 gets nothing and says why; server01 is planned as usual.
    refused = world.cli("plan", "--format", "json")
    assert refused.exit_code == 1, refused.output
    conflict = json.loads(refused.stdout)
    server02 = next(h for h in conflict["hosts"] if h["host"] == "server02")
    (error,) = server02["errors"]
    assert (error["code"], error["host"]) == ("account-conflict", "server02")
    assert "account spike on server02 has uid 1005" in error["message"]
    assert "uid 1006" in error["message"]
    assert not server02["applyable"]
    assert {a["object"]["name"] for a in actions(conflict, "server01")} == {
        "tom-container",
        "jerry-container",
        "cuda-9.0",  # no longer used on server01: a pending delete
    }
    # The admin's fix on the host: the account takes the new uid (usermod re-owns the home too).
    world.handle.exec("server02", "usermod", "-u", "1006", "spike")
    assert world.home("server02", "spike").stat().st_uid == 1006
    plan = world.plan()
    assert [e for h in plan["hosts"] for e in h["errors"]] == []

    tom = next(a for a in actions(plan, "server01") if a["object"]["name"] == "tom-container")
    assert (tom["kind"], tom["object"]["name"], tom["restart"]) == (
        "update",
        "tom-container",
        False,
    )
    assert changes(tom)["config.limits.cpu"][1] == "2"
    jerry = next(a for a in actions(plan, "server01") if a["object"]["name"] == "jerry-container")
    assert changes(jerry)["profiles"] == (
        ["default", "cuda-9.0", "cuda-10.0"],
        ["default", "cuda-10.0"],
    )
    delegation = [a for a in actions(plan, "server02") if a["object"]["kind"] == "delegation"]
    assert [(a["kind"], a["object"]["name"]) for a in delegation] == [("create", "subuid:1006")]
    spike = [a for a in actions(plan, "server02") if a["object"]["name"] == "spike-container"]
    assert delegation[0]["id"] in spike[1]["depends_on"]
    assert [(a["kind"], a["restart"]) for a in spike] == [
        ("stop", True),
        ("update", True),
        ("start", True),
    ]
    assert changes(spike[1])["config.raw.idmap"] == (
        "uid 1005 1000\ngid 1005 1000",
        "uid 1006 1000\ngid 1005 1000",
    )
    assert all(a["pending"] for a in spike)
    text = world.cli("plan").output
    assert "-/+ instance spike-container" in text, text
    assert "stopped, updated and started again" in text

    held = world.apply()
    assert held.exit_code == 0, held.output
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "2"
    spike_config = world.config("server02", "spike-container")["config"]
    assert spike_config["raw.idmap"] == "uid 1005 1000\ngid 1005 1000"

    done = world.apply("--allow-restart")
    assert done.exit_code == 0, done.output
    spike_config = world.config("server02", "spike-container")["config"]
    assert spike_config["raw.idmap"] == "uid 1006 1000\ngid 1005 1000"
    assert '"Hostid":1006' in spike_config["volatile.idmap.current"]
    # Left, waiting for --prune: the CUDA 9.0 profile nobody on server01 uses any more, and
    # root:1005:1, which the tool added to server02's /etc/subuid and no container maps now.
    left = [a for h in world.plan()["hosts"] for a in h["actions"]]
    assert {(a["kind"], a["object"]["name"]) for a in left} == {
        ("delete", "cuda-9.0"),
        ("delete", "subuid:1005"),
    }
    assert all(a["pending"].startswith("kept: deletes happen only with --prune") for a in left)
    assert "root:1005:1" in world.handle.exec("server02", "cat", "/etc/subuid").stdout
    assert world.apply("--prune").exit_code == 0
    assert world.lxc("server01", "profile", "list", "--format", "csv").count("cuda-9.0") == 0
    subuid = world.handle.exec("server02", "cat", "/etc/subuid").stdout.splitlines()
    assert "root:1005:1" not in subuid and "root:1006:1" in subuid
    assert "root:1005:1" not in Path("/etc/subuid").read_text().splitlines()
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0


def test_drift_made_by_hand_is_shown_and_reverted(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "1")
    world.lxc("server01", "config", "set", "tom-container", "user.note", "set by hand")
    plan = world.plan()
    (tom,) = actions(plan, "server01")
    assert changes(tom) == {
        "config.limits.cpu": ("1", "2"),
        "config.user.note": ("set by hand", None),
    }
    assert "drift" in tom["reason"]
    assert world.apply().exit_code == 0
    config = world.config("server01", "tom-container")["config"]
    assert config["limits.cpu"] == "2"
    assert "user.note" not in config
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0


def test_untagged_containers_are_never_touched(world: World) -> None:
    world.lxc("server01", "init", "template-busybox", "stray")
    before = world.config("server01", "stray")
    for args in ((), ("--prune",)):
        result = world.apply(*args)
        assert result.exit_code == 0, result.output
    assert world.config("server01", "stray") == before

    # An untagged container where the fleet wants one is an error naming both ways out.
    world.lxc("server02", "init", "template-busybox", "tyke-container")
    world.edit(
        lambda d: d["users"].update(
            tyke={"host": "server02", "template": "base", "uid": 1007, "gid": 1007}
        )
    )
    result = world.cli("plan")
    assert result.exit_code == 1
    assert "container tyke-container on server02 was not made by lxdgpu-reconcile" in result.output
    assert "lxc rename server02:tyke-container tyke-container-old" in result.output
    assert "--adopt tyke-container" in result.output
    assert world.apply().exit_code == 1
    assert "user.lxdgpu.managed" not in world.config("server02", "tyke-container")["config"]
    world.edit(lambda d: d["users"].pop("tyke"))
    world.lxc("server02", "delete", "tyke-container")
    world.lxc("server01", "delete", "stray")


def test_an_object_changed_after_the_plan_is_not_overwritten(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "1")
    fleet, site = use_lab(load_fleet(world.fleet_path).fleet, world.handle.dir)  # type: ignore[arg-type]
    plan = planner.make_plan(fleet, observe_fleet(fleet, timeout=30), site)
    assert [a.object.name for a in plan.actions if a.pending is None] == ["tom-container"]
    world.lxc("server01", "config", "set", "tom-container", "user.meanwhile", "x")

    report = executor.apply_plan(plan, fleet, timeout=60)
    (result,) = [r for r in report.results if r.outcome is not Outcome.PENDING]
    assert result.outcome is Outcome.FAILED
    assert "changed since the plan was made" in result.message
    assert "run plan again" in result.hint
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"

    assert world.apply().exit_code == 0
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_failure_on_one_host_stops_what_depends_on_it_and_others_go_on(world: World) -> None:
    # Another program holds server02's /etc/passwd (shadow's lock, as vipw or a useradd that runs
    # meanwhile would): rex's account cannot be made there, so neither can his container.
    world.edit(
        lambda d: d["users"].update(
            rex={"host": "server02", "template": "base", "uid": 5000, "gid": 5000}
        )
    )
    world.edit(lambda d: d["users"]["tom"].update(cpu=1))
    world.handle.exec("server02", "sh", "-c", "echo 1 > /etc/passwd.lock")
    try:
        result = world.apply()
    finally:
        world.handle.exec("server02", "rm", "-f", "/etc/passwd.lock")
    assert result.exit_code == 1
    assert "host account rex" in result.output and "cannot lock /etc/passwd" in result.output, (
        result.output
    )
    assert "rex-container" in result.output
    assert world.lxc("server02", "list", "rex-container", "--format", "csv", "-c", "n") == ""
    assert world.handle.exec("server02", "getent", "passwd", "rex", check=False).returncode == 2
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"

    # The lock is gone: re-running apply now converges.
    assert world.apply().exit_code == 0
    assert world.handle.exec("server02", "getent", "passwd", "rex").stdout.startswith(
        "rex:x:5000:5000:"
    )
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_removed_user_is_deleted_only_with_prune_and_never_while_protected(
    world: World,
) -> None:
    world.edit(lambda d: d["users"].pop("jerry"))
    plan = world.plan()
    (delete,) = [
        a
        for a in actions(plan, "server01")
        if a["kind"] == "delete" and a["object"]["kind"] == "instance"
    ]
    assert delete["pending"].startswith("kept: deletes happen only with --prune")
    assert "account jerry and /home/jerry stay on server01" in world.cli("plan").output

    assert world.apply().exit_code == 0
    assert world.lxc("server01", "list", "jerry-container", "--format", "csv", "-c", "n")

    result = world.apply("--prune")
    assert result.exit_code == 0, result.output
    assert "protected by security.protection.delete" in result.output
    assert "lxc config set server01:jerry-container security.protection.delete=false" in (
        result.output
    )
    assert world.lxc("server01", "list", "jerry-container", "--format", "csv", "-c", "n")

    world.lxc("server01", "config", "set", "jerry-container", "security.protection.delete", "false")
    # Changed after the plan was made: neither stopped nor deleted.
    fleet, site = use_lab(load_fleet(world.fleet_path).fleet, world.handle.dir)  # type: ignore[arg-type]
    plan = planner.make_plan(fleet, observe_fleet(fleet, timeout=30), site, prune=True)
    world.lxc("server01", "config", "set", "jerry-container", "user.meanwhile", "x")
    pruning = executor.Authority(prune=True, host_root=site.host_root, own_homes=site.own_homes)
    report = executor.apply_plan(plan, fleet, timeout=60, authority=pruning)
    outcomes = {r.id.rsplit("/", 1)[-1]: r for r in report.results if "jerry" in r.id}
    assert outcomes["delete-stop"].outcome is Outcome.FAILED
    assert "changed since the plan was made" in outcomes["delete-stop"].message
    assert outcomes["delete"].outcome is Outcome.SKIPPED
    status = world.lxc("server01", "list", "jerry-container", "--format", "csv", "-c", "s")
    assert status.strip() == "RUNNING"
    world.lxc("server01", "config", "unset", "jerry-container", "user.meanwhile")

    assert world.apply("--prune").exit_code == 0
    assert not world.lxc("server01", "list", "jerry-container", "--format", "csv", "-c", "n")
    assert world.home("server01", "jerry").is_dir()  # the user's data stays on the host
    assert world.handle.exec("server01", "getent", "passwd", "jerry").stdout  # and the account
    subuid = world.handle.exec("server01", "cat", "/etc/subuid").stdout.splitlines()
    assert "root:1004:1" not in subuid and "root:1003:1" in subuid  # jerry's delegation went
    assert world.cli("plan", "--detailed-exitcode", "--prune").exit_code == 0


def test_templates_are_built_copied_and_never_rebuild_containers(world: World) -> None:
    tools = {
        "alias": "template-tools",
        "base": "lab-images:busybox",
        "build_host": "server01",
        "steps": ["mkdir -p /opt/tools", "echo v1 > /opt/tools/version"],
        "files": [{"path": "/etc/tools.conf", "content": "answer = 42\n", "mode": "0640"}],
    }
    ann = {"host": "server02", "template": "tools", "uid": 1003, "gid": 1003}
    world.edit(lambda d: (d["templates"].update(tools=tools), d["users"].update(ann=ann)))

    plan = world.plan()
    build = [a for a in actions(plan, "server01") if a["kind"] == "build"]
    copy = [a for a in actions(plan, "server02") if a["kind"] == "copy"]
    assert [a["object"]["name"] for a in build + copy] == ["tools", "tools"]
    assert copy[0]["depends_on"] == [build[0]["id"]]
    result = world.apply()
    assert result.exit_code == 0, result.output
    assert "[2/2] echo v1 > /opt/tools/version" in result.output
    version = world.lxc("server02", "exec", "ann-container", "--", "cat", "/opt/tools/version")
    assert version.strip() == "v1"
    mode = world.lxc(
        "server02", "exec", "ann-container", "--", "stat", "-c", "%a", "/etc/tools.conf"
    )
    assert mode.strip() == "640"
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0

    # A changed step rebuilds and recopies the image; ann's container keeps what it has.
    world.edit(
        lambda d: d["templates"]["tools"]["steps"].__setitem__(1, "echo v2 > /opt/tools/version")
    )
    plan = world.plan()
    assert [a["kind"] for a in actions(plan, "server01")] == ["build"]
    assert [a["kind"] for a in actions(plan, "server02")] == ["copy"]
    assert world.apply().exit_code == 0
    result = world.cli("plan")
    assert "ann-container runs an older build of template tools" in result.output
    version = world.lxc("server02", "exec", "ann-container", "--", "cat", "/opt/tools/version")
    assert version.strip() == "v1"
    aliases = world.lxc("server02", "image", "list", "--format", "csv", "-c", "l")
    assert "template-tools-previous" in aliases

    # A failing step: the error names the step and its exit code, nothing is left behind and the
    # alias still names the last good image.
    before = world.lxc("server01", "query", "/1.0/images/aliases/template-tools")
    world.edit(lambda d: d["templates"]["tools"]["steps"].append("echo oops; exit 3"))
    result = world.apply()
    assert result.exit_code == 1
    assert "exit 3" in result.output and "oops" in result.output
    after = world.lxc("server01", "query", "/1.0/images/aliases/template-tools")
    assert json.loads(after)["target"] == json.loads(before)["target"]
    names = world.lxc("server01", "list", "--format", "csv", "-c", "n")
    assert "lxdgpu-build-" not in names
    world.edit(lambda d: d["templates"]["tools"]["steps"].pop())
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0
