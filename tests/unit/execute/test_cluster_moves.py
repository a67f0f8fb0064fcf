"""A cluster host over the in-memory cluster (``tests.fakes.cluster``): creates carry their
member, a changed ``member:`` moves the one container inside the cluster (stopped, LXD's move
with a target, rewritten, started) and keeps its root filesystem, busy GPUs hold the move, an
interrupted move is finished rather than redone, an offline target stops nothing, and the
executor refuses a member the fleet does not name."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor, moves
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.report import plan_text
from tests.fakes.cluster import FakeCluster
from tests.fakes.fleet import FakeFleet
from tests.unit.execute.test_executor_invariants import replace_action
from tests.unit.planning import support

DEPT = {"endpoint": "unix:///var/lib/lxd3/unix.socket", "cluster": {"members": ["node1", "node2"]}}
BUSY_LINE = b"4242, /opt/conda/bin/python, 21504 MiB\n"


def fleet_of(**users: dict[str, Any]) -> Fleet:
    base = {"template": "desk", "host": "dept"}
    return support.fleet_from(
        {"hosts": {"dept": DEPT}, "users": {name: {**base, **u} for name, u in users.items()}}
    )


ERIN = {"uid": 2001, "gid": 2001}
MEMBERS = {"node1": {"cpus": 8}, "node2": {"cpus": 8}}


def observed(**instances: Any) -> dict[str, Any]:
    return {"h1": {}, "dept": {"members": MEMBERS, "instances": instances}}


def setup(fleet: Fleet, data: dict[str, Any]) -> tuple[FakeFleet, FakeCluster]:
    snapshot = support.snapshot_from(data, fleet, sites.REAL)
    hosts = FakeFleet(snapshot)
    cluster = hosts.hosts["dept"]
    assert isinstance(cluster, FakeCluster)
    return hosts, cluster


def plan_of(fleet: Fleet, hosts: FakeFleet, **options: Any) -> plans.Plan:
    return planner.make_plan(fleet, hosts.snapshot(), sites.REAL, **options)


def apply(
    plan: plans.Plan, hosts: FakeFleet, fleet: Fleet, **authority: Any
) -> dict[str, ActionResult]:
    report = executor.apply_plan(
        plan,
        fleet,
        timeout=5.0,
        connect=hosts.connect,
        authority=executor.Authority(**authority),
    )
    return {result.id: result for result in report.results}


def moved_setup(**erin: Any) -> tuple[FakeFleet, FakeCluster, Fleet]:
    """erin's container runs on node1, with a file in it; the fleet now names node2."""
    before = fleet_of(erin=ERIN)
    hosts, cluster = setup(
        before, observed(**{"erin-container": {"as_desired": True, "location": "node1"}})
    )
    cluster.files[("erin-container", "/root/thesis.tex")] = {"type": "file", "content": b"x"}
    return hosts, cluster, fleet_of(erin={**ERIN, "member": "node2", **erin})


def test_creates_go_to_their_member_with_target_and_the_plan_says_where() -> None:
    fleet = fleet_of(erin={**ERIN, "member": "node2"}, frank={"uid": 2002, "gid": 2002})
    hosts, cluster = setup(fleet, observed())
    made = plan_of(fleet, hosts)
    text = plan_text.plain(made)
    assert "+ instance erin-container (on node2)" in text
    assert "+ instance frank-container (on node1)" in text

    results = apply(made, hosts, fleet)

    assert all(r.outcome is Outcome.DONE for r in results.values()), results
    assert results["dept/instance/erin-container/create"].message == "created on node2"
    assert cluster.location("erin-container") == "node2"
    assert cluster.location("frank-container") == "node1"
    assert "POST instances?target=node2" in cluster.requests
    assert plan_of(fleet, hosts).actions == ()


def test_a_changed_member_moves_the_one_container_and_keeps_its_root_filesystem() -> None:
    hosts, cluster, fleet = moved_setup()
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions
    assert move.kind is plans.ActionKind.MOVE and move.restart
    assert "to member node2" in plan_text.plain(made)

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert "moved from node1 to node2" in result.message and "started" in result.message
    assert cluster.location("erin-container") == "node2"
    assert cluster.instances["erin-container"]["status"] == "Running"
    assert state.TAG_MOVED_TO not in cluster.instances["erin-container"]["config"]
    assert cluster.files[("erin-container", "/root/thesis.tex")]["content"] == b"x"
    assert [n for n in cluster.instances] == ["erin-container"]  # never a second copy
    stop = cluster.writes.index("PUT instances/erin-container/state stop")
    assert stop < cluster.writes.index("POST instances/erin-container?target=node2 migration")
    assert plan_of(fleet, hosts).actions == ()


def test_without_allow_restart_a_running_container_is_not_moved() -> None:
    hosts, cluster, fleet = moved_setup()
    made = plan_of(fleet, hosts)
    (move,) = made.actions
    assert move.hold is plans.Hold.RESTART
    assert apply(made, hosts, fleet)[move.id].outcome is Outcome.PENDING
    assert cluster.location("erin-container") == "node1"
    assert cluster.instances["erin-container"]["status"] == "Running"


def test_busy_gpus_hold_the_move_and_nothing_is_stopped() -> None:
    hosts, cluster, fleet = moved_setup()
    cluster.exec_handler = lambda instance, command: (0, BUSY_LINE)
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.PENDING and "GPU busy" in result.message
    assert cluster.instances["erin-container"]["status"] == "Running"
    assert cluster.location("erin-container") == "node1"
    forced = apply(made, hosts, fleet, force=("erin-container",))[move.id]
    assert forced.outcome is Outcome.DONE, forced.message
    assert cluster.location("erin-container") == "node2"


def test_a_move_interrupted_before_lxd_moved_it_is_finished_by_the_next_apply() -> None:
    hosts, cluster, fleet = moved_setup()
    cluster.fail("move", "erin-container", "Error transferring instance data: broken pipe")
    made = plan_of(fleet, hosts, allow_restart=True)
    first = apply(made, hosts, fleet)[made.actions[0].id]
    assert first.outcome is Outcome.FAILED
    stopped = cluster.instances["erin-container"]
    assert stopped["status"] == "Stopped" and stopped["location"] == "node1"
    assert stopped["config"][state.TAG_MOVED_TO] == "dept/erin-container"

    again = plan_of(fleet, hosts)  # no --allow-restart: it is stopped already
    (move,) = again.actions
    assert move.pending is None and not move.restart
    assert "finishes an interrupted move" in move.reason
    assert apply(again, hosts, fleet)[move.id].outcome is Outcome.DONE
    assert cluster.location("erin-container") == "node2"
    assert cluster.instances["erin-container"]["status"] == "Running"
    assert plan_of(fleet, hosts).actions == ()


def test_a_move_interrupted_after_lxd_moved_it_only_starts_it() -> None:
    hosts, cluster, fleet = moved_setup()
    cluster.fail("start", "erin-container", "Failed to start: some trouble")
    made = plan_of(fleet, hosts, allow_restart=True)
    assert apply(made, hosts, fleet)[made.actions[0].id].outcome is Outcome.FAILED
    assert cluster.location("erin-container") == "node2"

    again = plan_of(fleet, hosts)  # rewritten already: what is left is the start
    (start,) = again.actions
    assert start.kind is plans.ActionKind.START and start.pending is None
    moves_before = [w for w in cluster.writes if "migration" in w]
    assert apply(again, hosts, fleet)[start.id].outcome is Outcome.DONE
    assert [w for w in cluster.writes if "migration" in w] == moves_before
    assert cluster.instances["erin-container"]["status"] == "Running"
    assert cluster.location("erin-container") == "node2"


def test_an_offline_target_member_stops_nothing() -> None:
    hosts, cluster, fleet = moved_setup()
    made = plan_of(fleet, hosts, allow_restart=True)
    cluster.member_down("node2")

    result = apply(made, hosts, fleet)[made.actions[0].id]

    assert result.outcome is Outcome.FAILED and "member node2 is offline" in result.message
    assert cluster.instances["erin-container"]["status"] == "Running"


def test_the_executor_moves_only_to_the_member_the_fleet_names() -> None:
    hosts, cluster, fleet = moved_setup()
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions
    assert isinstance(move.body, plans.MoveInstanceBody)
    body = move.body.model_copy(update={"member": "node1"})
    forged = replace_action(made, move.id, body=body)

    result = apply(forged, hosts, fleet)[move.id]

    assert result.outcome is Outcome.FAILED and "the fleet file names node2" in result.message
    assert cluster.instances["erin-container"]["status"] == "Running"


def test_a_down_member_leaves_its_containers_alone_and_the_rest_is_applied() -> None:
    fleet = fleet_of(erin=ERIN, frank={"uid": 2002, "gid": 2002}, ivy={"uid": 2008, "gid": 2008})
    hosts, cluster = setup(
        fleet,
        observed(
            **{
                "erin-container": {"as_desired": True, "location": "node2"},
                "frank-container": {"as_desired": True, "location": "node1"},
            }
        ),
    )
    cluster.member_down("node2")
    snap = hosts.snapshot().hosts["dept"]
    assert snap.unseen == {"erin-container": "node2"}
    assert "erin-container" not in snap.instances

    made = plan_of(fleet, hosts)
    assert any("erin-container is on member node2, which is offline" in n for n in made.notes)
    assert all(a.object.name != "erin-container" for a in made.actions)
    results = apply(made, hosts, fleet)
    assert all(r.outcome is Outcome.DONE for r in results.values()), results
    assert cluster.location("ivy-container") == "node1"


def test_a_move_from_another_host_is_created_on_the_member_the_fleet_names() -> None:
    before = fleet_of(erin=ERIN).model_copy()
    data = {
        "h1": {"instances": {"erin-container": {"as_desired": True}}},
        "dept": {"members": MEMBERS},
    }
    on_h1 = support.fleet_from(
        {
            "hosts": {"dept": DEPT},
            "users": {"erin": {**ERIN, "host": "h1", "template": "desk"}},
        }
    )
    hosts, cluster = setup(on_h1, data)
    fleet = fleet_of(erin={**ERIN, "member": "node2"})
    assert before.users["erin"].host == "dept"
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions
    assert isinstance(move.body, plans.MoveInstanceBody) and move.body.member == "node2"
    assert "h1 -> dept (on node2)" in plan_text.plain(made)

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert cluster.location("erin-container") == "node2"
    assert "POST instances?target=node2" in cluster.requests


def test_a_rename_that_changes_the_member_renames_then_moves() -> None:
    hosts, cluster, _ = moved_setup()
    fleet = fleet_of(erin={**ERIN, "member": "node2", "container": "erin-box"})
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions
    assert move.kind is plans.ActionKind.MOVE and move.object.name == "erin-box"

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert "renamed" in result.message and "moved from node1 to node2" in result.message
    assert list(cluster.instances) == ["erin-box"]
    assert cluster.location("erin-box") == "node2"
    assert plan_of(fleet, hosts).actions == ()


def test_the_plan_holds_a_member_move_whose_gpus_are_busy() -> None:
    hosts, cluster, fleet = moved_setup()
    cluster.exec_handler = lambda instance, command: (0, BUSY_LINE)
    made = plan_of(fleet, hosts, allow_restart=True)
    held = moves.hold_busy(made, hosts.snapshot(), hosts.connect)
    (move,) = held.actions
    assert move.hold is plans.Hold.GPU_BUSY and "apply --force erin-container" in (
        move.pending or ""
    )


def test_a_protected_container_is_released_for_the_move_and_protected_again_after() -> None:
    # LXD 5.0.2's move deletes the source: a protected one fails the move (a real cluster).
    hosts, cluster, fleet = moved_setup()
    assert cluster.instances["erin-container"]["config"]["security.protection.delete"] == "true"
    made = plan_of(fleet, hosts, allow_restart=True)
    (move,) = made.actions

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert cluster.location("erin-container") == "node2"
    assert cluster.instances["erin-container"]["config"]["security.protection.delete"] == "true"


def test_the_copy_a_failed_move_left_is_removed_before_the_move_is_tried_again() -> None:
    hosts, cluster, fleet = moved_setup()
    uuid = cluster.instances["erin-container"]["config"]["volatile.uuid"]
    leftover = f"lxd-move-of-{uuid}"
    cluster.instances[leftover] = {
        **cluster.instances["erin-container"],
        "name": leftover,
        "status": "Stopped",
        "location": "node2",
    }
    made = plan_of(fleet, hosts, allow_restart=True)
    move = next(a for a in made.actions if a.object.name == "erin-container")

    result = apply(made, hosts, fleet)[move.id]

    assert result.outcome is Outcome.DONE, result.message
    assert f"removed {leftover}" in result.message
    assert leftover not in cluster.instances
    assert cluster.location("erin-container") == "node2"
