"""Saved plans and unattended reconcile against real LXD daemons: the GitOps workflows end to end.

One scenario on a lab of its own (two hosts, three users), run in order: a saved plan applied
exactly; saved plans refused after a change by hand, after a fleet edit and after an edit of
the plan file itself; reconcile correcting drift (its ``--snapshot-out`` giving the plan it made),
holding a restart back under the default policy and applying it when the policy (always, or a
time window) allows; a paused user left alone; two reconcile runs at once, and a run that finds
the lock held. Each step starts from where the last one left the hosts.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from lxdgpu_reconcile.cli import app
from tests.integration.conftest import LAB_FLEET, LabHandle, bring_down, bring_up, new_lab_dir

pytestmark = pytest.mark.lxd

REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    handle: LabHandle
    fleet_path: Path
    work: Path

    @property
    def lock(self) -> Path:
        return self.work / "reconcile.lock"

    @property
    def log(self) -> Path:
        return self.work / "reconcile.jsonl"

    @property
    def metrics(self) -> Path:
        return self.work / "lxdgpu_reconcile.prom"

    def cli(self, *args: str) -> Result:
        """Run the command line against this lab (``-f``, ``--lab`` and the lock file added)."""
        argv = [*args, "-f", str(self.fleet_path), "--lab", str(self.handle.dir)]
        env = {"LXDGPU_LOCK_FILE": str(self.lock)}
        return CliRunner().invoke(app, argv, env=env, catch_exceptions=False)

    def reconcile(self, *args: str) -> Result:
        return self.cli(
            "reconcile",
            "--log-file",
            str(self.log),
            "--metrics-file",
            str(self.metrics),
            *args,
        )

    def reconcile_argv(self, *args: str) -> list[str]:
        """``python -m lxdgpu_reconcile reconcile ...`` for a separate process."""
        return [
            sys.executable,
            "-m",
            "lxdgpu_reconcile",
            "reconcile",
            "-f",
            str(self.fleet_path),
            "--lab",
            str(self.handle.dir),
            "--lock-file",
            str(self.lock),
            "--log-file",
            str(self.log),
            *args,
        ]

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def lxc(self, host: str, *args: str) -> str:
        return self.handle.lxc(host, *args).stdout

    def config(self, host: str, name: str) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(self.lxc(host, "config", "show", name))
        return data

    def status(self, host: str, name: str) -> str:
        (item,) = json.loads(self.lxc(host, "list", name, "--format", "json"))
        return str(item["status"])

    def edit(self, change: Any) -> None:
        """Change the fleet file: ``change(data)`` edits the parsed YAML in place."""
        data = yaml.safe_load(self.fleet_path.read_text())
        change(data)
        self.fleet_path.write_text(yaml.safe_dump(data, sort_keys=False))


def last_run(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return [line for line in lines if line["event"] == "run"][-1]


def run_actions(lines: list[dict[str, Any]], run: str) -> dict[str, dict[str, Any]]:
    return {line["id"]: line for line in lines if line["event"] == "action" and line["run"] == run}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("gitops")
    fleet_path = work / "fleet.yaml"
    fleet_path.write_text(LAB_FLEET.read_text())
    lab_dir = new_lab_dir()
    try:
        world = World(bring_up(fleet_path, lab_dir), fleet_path, work)
        result = world.cli("apply", "--yes")
        assert result.exit_code == 0, result.output
        yield world
    finally:
        bring_down(lab_dir)


# --- saved plans ----------------------------------------------------------------------------------


def test_a_saved_plan_is_applied_exactly(world: World) -> None:
    world.edit(lambda d: d["users"]["tom"].update(cpu=2))
    saved = world.work / "plan-1.json"
    result = world.cli("plan", "--out", str(saved), "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!-- lxdgpu-reconcile plan -->\n")
    assert "| server01 | 0 | 1 | 0 | 0 | 0 | 0 |" in result.stdout
    assert f"apply {saved}" in result.stderr

    data = json.loads(saved.read_text())
    assert data["kind"] == "lxdgpu-reconcile-saved-plan"
    assert data["lab"] == str(world.handle.dir.resolve())
    (condition,) = data["preconditions"]
    assert (condition["host"], condition["object"]["name"], condition["status"]) == (
        "server01",
        "tom-container",
        "Running",
    )
    assert "BEGIN" not in saved.read_text()  # no certificate or key ever goes into a plan

    applied = world.cli("apply", str(saved))
    assert applied.exit_code == 0, applied.output
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "2"
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0

    again = world.cli("apply", str(saved))  # applied once: the object is no longer as planned
    assert again.exit_code == 1
    assert "is stale: nothing was applied" in again.output


def test_a_saved_plan_is_refused_after_a_change_by_hand(world: World) -> None:
    world.edit(lambda d: (d["users"]["tom"].update(cpu=1), d["users"]["spike"].update(cpu=2)))
    saved = world.work / "plan-2.json"
    assert world.cli("plan", "--out", str(saved)).exit_code == 0
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "3")

    result = world.cli("apply", str(saved))
    assert result.exit_code == 1
    assert f"{saved} is stale: nothing was applied." in result.output
    assert "server01: instance tom-container changed on the host since the plan was made" in (
        result.output
    )
    assert 'config.limits.cpu: "2" -> "3"' in result.output
    assert "Run plan again" in result.output and "Traceback" not in result.output
    # Nothing was written anywhere: not even on the other host, whose object did not change.
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "3"
    assert world.config("server02", "spike-container")["config"]["limits.cpu"] == "1"

    fresh = world.work / "plan-3.json"
    assert world.cli("plan", "--out", str(fresh)).exit_code == 0
    assert world.cli("apply", str(fresh)).exit_code == 0
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"
    assert world.config("server02", "spike-container")["config"]["limits.cpu"] == "2"


def test_a_saved_plan_is_refused_after_a_fleet_edit(world: World) -> None:
    world.edit(lambda d: d["users"]["tom"].update(cpu=2))
    saved = world.work / "plan-4.json"
    assert world.cli("plan", "--out", str(saved)).exit_code == 0
    world.edit(lambda d: d["users"]["jerry"].update(cpu=1))

    result = world.cli("apply", str(saved))
    assert result.exit_code == 1
    assert f"the fleet file {world.fleet_path} changed since the plan was made" in result.output
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"

    options = world.cli("apply", str(saved), "--allow-restart")
    assert options.exit_code == 1
    assert "a saved plan was made with its options" in options.output

    assert world.cli("apply", "--yes").exit_code == 0


def test_an_edited_saved_plan_is_refused_and_writes_nothing(world: World) -> None:
    world.edit(lambda d: d["users"]["tom"].update(cpu=1))
    saved = world.work / "plan-edited.json"
    assert world.cli("plan", "--out", str(saved)).exit_code == 0
    data = json.loads(saved.read_text())
    (update,) = [
        action
        for host in data["plan"]["hosts"]
        for action in host["actions"]
        if action["object"]["name"] == "tom-container" and action["body"]
    ]
    # What a hostile edit adds: a privileged container with the host's / mounted in it.
    update["body"]["config"]["security.privileged"] = "true"
    update["body"]["devices"]["hostroot"] = {"type": "disk", "source": "/", "path": "/mnt/host"}
    saved.write_text(json.dumps(data, indent=2))

    result = world.cli("apply", str(saved))
    assert result.exit_code == 1, result.output
    assert "is not the plan that its fleet file and the hosts give now: nothing was applied" in (
        result.output
    )
    assert f"action {update['id']} differs" in result.output
    assert "body.config.security.privileged" in result.output
    assert "body.devices.hostroot" in result.output
    assert "Traceback" not in result.output
    config = world.config("server01", "tom-container")
    assert config["config"]["limits.cpu"] == "2"  # nothing was written, not even the cpu
    assert "security.privileged" not in config["config"]
    assert "hostroot" not in config["devices"]

    world.edit(lambda d: d["users"]["tom"].update(cpu=2))
    assert world.cli("plan", "--detailed-exitcode").exit_code == 0


# --- reconcile ------------------------------------------------------------------------------------


def test_reconcile_corrects_drift_made_by_hand(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "3")
    world.lxc("server01", "config", "set", "tom-container", "user.note", "set by hand")
    world.lxc("server01", "stop", "jerry-container", "--force")

    result = world.reconcile()
    assert result.exit_code == 2, result.output
    assert "Changed: every change was applied" in result.stdout
    config = world.config("server01", "tom-container")["config"]
    assert config["limits.cpu"] == "2" and "user.note" not in config
    assert world.status("server01", "jerry-container") == "Running"

    lines = world.log_lines()
    run = last_run(lines)
    assert (run["result"], run["exit_code"]) == ("changed", 2)
    assert run["hosts"]["server01"] == {"drift": 2, "pending": 0, "errors": 0, "applied": 2}
    done = run_actions(lines, run["run"])
    tom = done["server01/instance/tom-container/update"]
    assert (tom["cause"], tom["outcome"]) == ("drift", "done")
    assert tom["fields"] == ["config.limits.cpu", "config.user.note"]
    assert "set by hand" not in json.dumps(lines)  # values never go into the log
    assert done["server01/instance/jerry-container/start"]["cause"] == "power"

    metrics = world.metrics.read_text()
    assert 'lxdgpu_reconcile_drift{host="server01"} 2' in metrics
    assert 'lxdgpu_reconcile_pending_actions{host="server01"} 0' in metrics
    assert "lxdgpu_reconcile_last_success_timestamp_seconds " in metrics

    converged = world.reconcile()
    assert converged.exit_code == 0, converged.output
    assert last_run(world.log_lines())["result"] == "converged"


def test_a_reconcile_snapshot_plans_as_the_hosts_did_before_the_run(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "3")
    before = world.cli("plan", "--format", "json")
    snapshot = world.work / "reconcile-snapshot.json"

    result = world.reconcile("--snapshot-out", str(snapshot))
    offline = world.cli("plan", "--format", "json", "--state", str(snapshot))

    assert result.exit_code == 2, result.output
    assert before.exit_code == offline.exit_code == 0, offline.output
    assert json.loads(before.stdout)["summary"]["update"] == 1
    # The plan from the snapshot is the one the run made, before it corrected the drift.
    assert offline.stdout == before.stdout
    after = world.cli("plan", "--format", "json")
    assert json.loads(after.stdout)["summary"]["update"] == 0


def _window(start: datetime.datetime, hours: int) -> str:
    end = start + datetime.timedelta(hours=hours)
    return f"{start:%H:%M}-{end:%H:%M}"


def test_a_restart_is_pending_by_default_and_applied_when_the_policy_allows(world: World) -> None:
    hand = "uid 1004 1000\ngid 1004 1000"
    world.lxc("server02", "config", "set", "spike-container", "raw.idmap", hand)

    held = world.reconcile()
    assert held.exit_code == 3, held.output
    assert "reconcile.allow_restarts is never" in held.stdout
    assert world.config("server02", "spike-container")["config"]["raw.idmap"] == hand
    assert world.status("server02", "spike-container") == "Running"
    lines = world.log_lines()
    run = last_run(lines)
    assert run["result"] == "pending" and run["hosts"]["server02"]["pending"] == 1
    update = run_actions(lines, run["run"])["server02/instance/spike-container/restart-update"]
    assert (update["outcome"], update["hold"]) == ("pending", "restart")
    assert 'lxdgpu_reconcile_pending_actions{host="server02"} 1' in world.metrics.read_text()

    # A window that starts in an hour: still held back, and the reason says when it applies.
    now = datetime.datetime.now()
    later = _window(now + datetime.timedelta(hours=1), 1)
    world.edit(lambda d: d.update(reconcile={"allow_restarts": "window", "restart_window": later}))
    outside = world.reconcile()
    assert outside.exit_code == 3, outside.output
    assert f"only inside reconcile.restart_window {later}" in outside.stdout

    # A window around now (it may cross midnight): applied.
    around = _window(now - datetime.timedelta(hours=1), 2)
    world.edit(lambda d: d["reconcile"].update(restart_window=around))
    inside = world.reconcile()
    assert inside.exit_code == 2, inside.output
    config = world.config("server02", "spike-container")["config"]
    assert config["raw.idmap"] == "uid 1005 1000\ngid 1005 1000"
    assert '"Hostid":1005' in config["volatile.idmap.current"]
    assert world.status("server02", "spike-container") == "Running"

    # allow_restarts: always
    world.lxc("server02", "config", "set", "spike-container", "raw.idmap", hand)
    world.edit(lambda d: d.update(reconcile={"allow_restarts": "always"}))
    always = world.reconcile()
    assert always.exit_code == 2, always.output
    assert world.config("server02", "spike-container")["config"]["raw.idmap"] != hand
    world.edit(lambda d: d.pop("reconcile"))
    assert world.reconcile().exit_code == 0


def test_a_paused_user_is_left_alone(world: World) -> None:
    world.edit(lambda d: d["users"]["tom"].update(paused=True, cpu=1))
    world.lxc("server01", "config", "set", "tom-container", "user.note", "training run")
    plan = world.cli("plan")
    assert "paused in the fleet file (users.tom.paused: true)" in plan.output

    result = world.reconcile()
    assert result.exit_code == 3, result.output
    assert world.cli("apply", "--yes").exit_code == 0
    config = world.config("server01", "tom-container")["config"]
    assert config["limits.cpu"] == "2" and config["user.note"] == "training run"
    run = last_run(world.log_lines())
    assert run["hosts"]["server01"]["pending"] == 1 and run["hosts"]["server01"]["applied"] == 0

    world.edit(lambda d: d["users"]["tom"].pop("paused"))
    assert world.reconcile().exit_code == 2
    config = world.config("server01", "tom-container")["config"]
    assert config["limits.cpu"] == "1" and "user.note" not in config


def test_two_reconcile_runs_at_once_apply_each_change_once(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "3")
    world.lxc("server02", "stop", "spike-container", "--force")
    before = len(world.log_lines())
    runs = [
        subprocess.Popen(
            world.reconcile_argv("--lock-wait", "120"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert sorted(run.returncode for run in runs) == [0, 2], outputs

    lines = world.log_lines()[before:]
    assert sorted(line["result"] for line in lines if line["event"] == "run") == [
        "changed",
        "converged",
    ]
    done = [line["id"] for line in lines if line["event"] == "action" and line["outcome"] == "done"]
    assert sorted(done) == [
        "server01/instance/tom-container/update",
        "server02/instance/spike-container/start",
    ]
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"


def test_a_run_that_cannot_get_the_lock_does_nothing_and_exits_4(world: World) -> None:
    world.lxc("server01", "config", "set", "tom-container", "limits.cpu", "3")
    fd = os.open(world.lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 1 (apply) since earlier\n")
        done = subprocess.run(
            world.reconcile_argv("--lock-wait", "1"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(fd)
    assert done.returncode == 4, done.stderr
    assert "another lxdgpu-reconcile run holds" in done.stdout + done.stderr
    assert "pid 1 (apply) since earlier" in done.stdout + done.stderr
    assert last_run(world.log_lines())["result"] == "locked"
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "3"

    assert world.reconcile().exit_code == 2
    assert world.config("server01", "tom-container")["config"]["limits.cpu"] == "1"
