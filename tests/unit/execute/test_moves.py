"""Moves between hosts and renames, performed by the real executor over in-memory LXD hosts
(``tests.fakes``): the root filesystem goes along, the source stays stopped and tagged, an
interrupted move is finished by the next apply, busy GPUs are never stopped without ``--force``,
the executor's invariants hold for move bodies, and saved plans check both hosts."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor, moves
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner, saving
from lxdgpu_reconcile.report import plan_json, plan_markdown, plan_text
from tests.fakes.fleet import FakeFleet
from tests.unit.execute.test_executor_invariants import replace_action
from tests.unit.planning import support

H2 = {"endpoint": "unix:///var/lib/lxd2/unix.socket"}
FLEET = support.fleet_from(
    {
        "hosts": {"h2": H2},
        "users": {"alice": {"host": "h2", "template": "desk", "uid": 1001, "gid": 1001}},
    }
)
SOURCE: dict[str, Any] = {
    "status": "Running",
    "config": {
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.user": "alice",
        "user.lxdgpu.role": "container",
        "user.lxdgpu.created-as": "h1/alice-container",
        "security.protection.delete": "true",
        "raw.idmap": "uid 1001 1000\ngid 1001 1000",
    },
}
RESTART = executor.Authority(prune=False)
BUSY_LINE = b"4242, /opt/conda/bin/python, 21504 MiB\n"


def observed(**h1: Any) -> dict[str, Any]:
    return {"h1": {"instances": {"alice-container": {**SOURCE, **h1}}}, "h2": {}}


def plan_of(snapshot: state.FleetSnapshot, fleet: Any = FLEET, **options: Any) -> plans.Plan:
    options.setdefault("allow_restart", True)
    return planner.make_plan(fleet, snapshot, sites.REAL, **options)


def apply(
    plan: plans.Plan, hosts: FakeFleet, authority: executor.Authority = RESTART, fleet: Any = FLEET
) -> dict[str, ActionResult]:
    report = executor.apply_plan(
        plan, fleet, timeout=5.0, connect=hosts.connect, authority=authority
    )
    return {result.id: result for result in report.results}


def start() -> tuple[FakeFleet, plans.Plan]:
    snapshot = support.snapshot_from(observed(), FLEET, sites.REAL)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].files[("alice-container", "/root/notes.txt")] = {
        "type": "file",
        "content": b"thesis",
        "mode": "0644",
    }
    return hosts, plan_of(snapshot)


def test_a_move_copies_the_root_filesystem_rewrites_for_the_new_host_and_keeps_the_source() -> None:
    hosts, made = start()
    (move,) = made.actions
    assert move.kind is plans.ActionKind.MOVE and move.host == "h2"

    result = apply(made, hosts)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert "copied from h1" in result.message and "started" in result.message
    h1, h2 = hosts.hosts["h1"], hosts.hosts["h2"]
    assert h2.files[("alice-container", "/root/notes.txt")]["content"] == b"thesis"
    target = h2.instances["alice-container"]
    assert target["status"] == "Running"
    assert target["config"]["raw.idmap"] == "uid 1001 1000\ngid 1001 1000"
    assert target["config"]["user.lxdgpu.created-as"] == "h2/alice-container"
    assert target["devices"]["home"]["source"] == "/home/alice"
    source = h1.instances["alice-container"]
    assert source["status"] == "Stopped"
    assert source["config"][state.TAG_MOVED_TO] == "h2/alice-container"
    assert state.TAG_MOVED_AT in source["config"]
    # The second plan is empty (the source is a note), and --prune then deletes the source.
    after = hosts.snapshot()
    again = plan_of(after)
    assert again.actions == ()
    assert any("it stays, stopped, until `apply --prune`" in n for n in again.notes)
    pruned = plan_of(after, prune=True)
    (delete,) = pruned.actions
    assert delete.kind is plans.ActionKind.DELETE and delete.host == "h1"
    done = apply(pruned, hosts, executor.Authority(prune=True))[delete.id]
    assert done.outcome is Outcome.DONE, done.message
    assert "alice-container" not in h1.instances


def test_the_moved_source_is_not_deleted_without_prune_given_to_the_run() -> None:
    hosts, made = start()
    apply(made, hosts)
    pruned = plan_of(hosts.snapshot(), prune=True)
    (delete,) = pruned.actions
    result = apply(pruned, hosts, executor.Authority(prune=False))[delete.id]
    assert result.outcome is Outcome.FAILED and "not given --prune" in result.message
    assert "alice-container" in hosts.hosts["h1"].instances


def test_with_prune_a_move_does_not_delete_its_source_in_the_same_plan() -> None:
    snapshot = support.snapshot_from(observed(), FLEET, sites.REAL)
    made = plan_of(snapshot, prune=True)
    assert [a.kind for a in made.actions] == [plans.ActionKind.MOVE]


def test_an_apply_killed_after_the_copy_is_finished_by_the_next_one() -> None:
    hosts, made = start()
    hosts.hosts["h2"].fail("start", "alice-container", "the tool was killed")
    (move,) = made.actions
    assert apply(made, hosts)[move.id].outcome is Outcome.FAILED
    h1, h2 = hosts.hosts["h1"], hosts.hosts["h2"]
    assert h2.instances["alice-container"]["status"] == "Stopped"  # copy present, stopped
    assert h1.instances["alice-container"]["status"] == "Stopped"  # source stopped, tagged
    assert h1.instances["alice-container"]["config"][state.TAG_MOVED_TO] == "h2/alice-container"

    again = plan_of(hosts.snapshot(), allow_restart=False)
    (finish,) = again.actions
    assert finish.kind is plans.ActionKind.MOVE and finish.pending is None
    assert "finishes an interrupted move" in finish.reason
    copies_before = [w for w in h2.writes if w == "POST instances"]
    result = apply(again, hosts)[finish.id]

    assert result.outcome is Outcome.DONE, result.message
    assert [w for w in h2.writes if w == "POST instances"] == copies_before  # not copied again
    running = [
        (name, host)
        for host, fake in hosts.hosts.items()
        for name, inst in fake.instances.items()
        if inst["status"] == "Running"
    ]
    assert running == [("alice-container", "h2")]
    assert state.TAG_MOVED_AT in h1.instances["alice-container"]["config"]
    assert plan_of(hosts.snapshot()).actions == ()


def test_a_source_stopped_before_the_copy_is_copied_by_the_next_apply() -> None:
    hosts, made = start()
    hosts.hosts["h2"].fail("migrate", "alice-container", "connection reset")
    (move,) = made.actions
    failed = apply(made, hosts)[move.id]
    assert failed.outcome is Outcome.FAILED
    assert "the source stays, stopped, on h1" in failed.message
    assert "alice-container" not in hosts.hosts["h2"].instances
    again = plan_of(hosts.snapshot(), allow_restart=False)
    (finish,) = again.actions
    assert finish.pending is None and not finish.restart
    assert apply(again, hosts)[finish.id].outcome is Outcome.DONE
    assert hosts.hosts["h2"].instances["alice-container"]["status"] == "Running"


def test_a_busy_gpu_is_not_stopped_unless_forced() -> None:
    hosts, made = start()
    hosts.hosts["h1"].exec_handler = lambda instance, command: (0, BUSY_LINE)
    (move,) = made.actions
    refused = apply(made, hosts)[move.id]
    assert refused.outcome is Outcome.PENDING  # held, as a plan that sees the GPUs busy holds it
    assert "GPU busy: 1 process, python 21 GiB" in refused.message
    assert "--force alice-container" in refused.hint
    assert hosts.hosts["h1"].instances["alice-container"]["status"] == "Running"
    assert "alice-container" not in hosts.hosts["h2"].instances

    forced = executor.Authority(force=("alice-container",))
    result = apply(made, hosts, forced)[move.id]
    assert result.outcome is Outcome.DONE, result.message
    assert "GPU busy" in result.message and "--force alice-container" in result.message


def test_a_busy_gpu_holds_a_restart_and_the_stop_before_a_delete() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    data = {
        "h1": {
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "config": {"raw.idmap": "uid 1 1000\ngid 1 1000"},
                },
                "old-container": {
                    "status": "Running",
                    "config": {"user.lxdgpu.managed": "true", "user.lxdgpu.user": "old"},
                },
            }
        }
    }
    snapshot = support.snapshot_from(data, fleet, sites.REAL)
    made = plan_of(snapshot, fleet=fleet, prune=True)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].exec_handler = lambda instance, command: (0, BUSY_LINE + BUSY_LINE)
    results = apply(made, hosts, executor.Authority(prune=True), fleet=fleet)
    for stop in ("h1/instance/tom-container/restart-stop", "h1/instance/old-container/delete-stop"):
        assert results[stop].outcome is Outcome.PENDING, stop
        assert "GPU busy: 2 processes, python 21 GiB" in results[stop].message
    # What waits for a held stop is held too, not failed: the apply has nothing to fix.
    for step in ("h1/instance/tom-container/restart-update", "h1/instance/old-container/delete"):
        assert results[step].outcome is Outcome.PENDING, step
        assert results[step].message.startswith("waits for h1/instance/"), step
    assert not any(r.outcome in (Outcome.FAILED, Outcome.SKIPPED) for r in results.values())
    assert all(i["status"] == "Running" for i in hosts.hosts["h1"].instances.values())


def test_unknown_gpu_use_lets_the_stop_go_and_says_so() -> None:
    hosts, made = start()
    hosts.hosts["h1"].exec_handler = lambda instance, command: (127, b"")
    (move,) = made.actions
    result = apply(made, hosts)[move.id]
    assert result.outcome is Outcome.DONE
    assert "GPU use unknown (no nvidia-smi in the container)" in result.message


def test_gpu_use_is_read_from_nvidia_smi_lines() -> None:
    assert moves.describe_gpu_use(()) is None
    assert moves.describe_gpu_use(["No running processes found"]) is None
    assert moves.describe_gpu_use(["12, python, 300 MiB"]) == "1 process, python 300 MiB"


def test_a_move_body_with_another_idmap_or_host_is_refused() -> None:
    hosts, made = start()
    (move,) = made.actions
    assert isinstance(move.body, plans.MoveInstanceBody)
    config = {**move.body.config, "raw.idmap": "uid 0 1000\ngid 0 1000"}
    bad_map = replace_action(made, move.id, body=move.body.model_copy(update={"config": config}))
    result = apply(bad_map, hosts)[move.id]
    assert result.outcome is Outcome.FAILED and "raw.idmap" in result.message
    other = move.body.model_copy(update={"user": "mallory"})
    wrong_user = replace_action(made, move.id, body=other)
    result = apply(wrong_user, hosts)[move.id]
    assert result.outcome is Outcome.FAILED
    assert "where the fleet file does not put it" in result.message
    assert hosts.hosts["h1"].instances["alice-container"]["status"] == "Running"
    assert "alice-container" not in hosts.hosts["h2"].instances


def test_renames_keep_the_root_filesystem() -> None:
    fleet = support.fleet_from(
        {
            "users": {
                "alice": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1001,
                    "gid": 1001,
                    "container": "alice-box",
                }
            }
        }
    )
    snapshot = support.snapshot_from(
        {"h1": {"instances": {"alice-container": SOURCE}}}, fleet, sites.REAL
    )
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].files[("alice-container", "/root/notes.txt")] = {"content": b"x"}
    made = plan_of(snapshot, fleet=fleet)
    (rename,) = made.actions
    assert rename.kind is plans.ActionKind.RENAME
    assert apply(made, hosts, fleet=fleet)[rename.id].outcome is Outcome.DONE
    h1 = hosts.hosts["h1"]
    assert set(h1.instances) == {"alice-box"}
    assert h1.files[("alice-box", "/root/notes.txt")] == {"content": b"x"}
    config = h1.instances["alice-box"]["config"]
    assert config["user.lxdgpu.created-as"] == "h1/alice-box"
    assert state.TAG_MOVED_TO not in config
    assert plan_of(hosts.snapshot(), fleet=fleet).actions == ()


def test_saved_plans_check_both_hosts_of_a_move() -> None:
    snapshot = support.snapshot_from(observed(), FLEET, sites.REAL)
    made = plan_of(snapshot)
    saved = saving.save(
        made,
        snapshot,
        fleet=saving.FleetFile(path="fleet.yaml", sha256="ab" * 32),
        lab=None,
        tool_version="1",
        created_at="now",
    )
    conditions = {(p.host, p.object.name): p for p in saved.preconditions}
    assert conditions[("h2", "alice-container")].exists is False
    assert conditions[("h1", "alice-container")].exists is True
    assert conditions[("h1", "alice-container")].status == "Running"
    check = {"fleet_sha256": "ab" * 32, "tool_version": "1"}
    assert saving.check(saved, snapshot, **check) == ()
    stopped = support.snapshot_from(observed(status="Stopped"), FLEET, sites.REAL)
    (stale,) = saving.check(saved, stopped, **check)
    assert stale.host == "h1" and "was Running when the plan was made" in stale.message


def test_a_move_is_rendered_with_both_hosts() -> None:
    snapshot = support.snapshot_from(observed(), FLEET, sites.REAL)
    made = plan_of(snapshot)
    text = plan_text.plain(made)
    assert "  ~> instance alice-container  h1 -> h2 (check the GPUs are idle" in text
    assert "Plan: 1 to move, 0 to create" in text
    markdown = plan_markdown.render(made)
    assert "~> instance alice-container  h1 -> h2" in markdown and "**Moves**" in markdown
    assert '"kind": "move"' in plan_json.render(made)
    assert '"source_host": "h1"' in plan_json.render(made)


def test_hosts_that_cannot_reach_each_other_get_an_error_naming_both() -> None:
    hosts, made = start()
    hosts.hosts["h1"]._server["environment"]["addresses"] = ["10.9.9.9:8443"]
    (move,) = made.actions
    result = apply(made, hosts)[move.id]
    assert result.outcome is Outcome.FAILED
    assert "from h1 (https://10.9.9.9:8443) to h2" in result.message
    assert "the source stays, stopped, on h1" in result.message
    assert "h2 must reach https://10.9.9.9:8443" in result.hint
    assert "alice-container" not in hosts.hosts["h2"].instances
    migrations = [o for o in hosts.hosts["h1"].operations.values() if o.get("class") == "websocket"]
    assert migrations == []  # the source's migration was cancelled


def test_status_shows_a_moved_source_as_moved() -> None:
    from lxdgpu_reconcile.report import status

    hosts, made = start()
    apply(made, hosts)
    data = status.status_json(FLEET, hosts.snapshot())
    rows = {(c["host"], c["name"]): c for c in data["containers"]}
    assert rows[("h1", "alice-container")]["moved_to"] == "h2"
    assert "moved_to" not in rows[("h2", "alice-container")]


def test_reconcile_moves_a_running_container_only_inside_its_restart_window() -> None:
    import datetime

    from lxdgpu_reconcile.fleet import models
    from lxdgpu_reconcile.reconcile import policy

    rules = models.ReconcilePolicy(allow_restarts="window", restart_window="02:00-06:00")
    snapshot = support.snapshot_from(observed(), FLEET, sites.REAL)
    for now, held in ((datetime.time(12, 0), True), (datetime.time(3, 0), False)):
        decision = policy.decide(rules, now)
        made = plan_of(snapshot, allow_restart=decision.allow_restart)
        (move,) = policy.govern(made, decision).actions
        assert (move.pending is not None) is held, now
        if held:
            assert move.hold is plans.Hold.RESTART
            assert "reconcile.restart_window 02:00-06:00" in (move.pending or "")


def test_a_plan_holds_what_would_stop_a_busy_container_unless_forced() -> None:
    hosts, made = start()
    snapshot = hosts.snapshot()
    hosts.hosts["h1"].exec_handler = lambda instance, command: (0, BUSY_LINE)
    (held,) = moves.hold_busy(made, snapshot, hosts.connect).actions
    assert held.hold is plans.Hold.GPU_BUSY
    assert held.pending == (
        "GPU busy: 1 process, python 21 GiB; apply --force alice-container stops it anyway"
    )
    (forced,) = moves.hold_busy(made, snapshot, hosts.connect, force=("alice-container",)).actions
    assert forced.pending is None
    hosts.hosts["h1"].exec_handler = lambda instance, command: (127, b"")
    (unknown,) = moves.hold_busy(made, snapshot, hosts.connect).actions
    assert unknown.pending is None
    assert all(i["status"] == "Running" for i in hosts.hosts["h1"].instances.values())


def test_a_held_restart_says_gpu_busy_on_the_update_too() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    data = {
        "h1": {
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "config": {"raw.idmap": "uid 1 1000\ngid 1 1000"},
                }
            }
        }
    }
    snapshot = support.snapshot_from(data, fleet, sites.REAL)
    made = plan_of(snapshot, fleet=fleet)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].exec_handler = lambda instance, command: (0, BUSY_LINE)
    held = {a.id: a for a in moves.hold_busy(made, snapshot, hosts.connect).actions}
    update = held["h1/instance/tom-container/restart-update"]
    assert update.hold is plans.Hold.GPU_BUSY and (update.pending or "").startswith("GPU busy")
    assert held["h1/instance/tom-container/restart-start"].hold is plans.Hold.DEPENDENCY


def test_a_stop_says_when_the_gpu_use_was_unknown() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    config = {"user.lxdgpu.managed": "true", "user.lxdgpu.user": "old"}
    data = {"h1": {"instances": {"old": {"status": "Running", "config": config}}}}
    snapshot = support.snapshot_from(data, fleet, sites.REAL)
    made = plan_of(snapshot, fleet=fleet, prune=True)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].exec_handler = lambda instance, command: (127, b"")
    results = apply(made, hosts, executor.Authority(prune=True), fleet=fleet)
    stop = results["h1/instance/old/delete-stop"]
    assert stop.message == "stopped (GPU use unknown (no nvidia-smi in the container))"
