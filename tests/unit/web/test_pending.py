"""Hosts' memory and what a plan would change on each container, on the page and in the API:
the summaries of hand-built plans (moves, holds, secret-looking fields), the planner run once per
observation by the board, never per page view (no LXD)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.planning import diff, rules
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.planning.model import (
    Action,
    ActionKind,
    Hold,
    HostPlan,
    InstanceBody,
    MoveInstanceBody,
    Plan,
)
from lxdgpu_reconcile.site import REAL
from lxdgpu_reconcile.state import TAG_MOVED_AT, TAG_MOVED_TO, FleetSnapshot, InstanceObs
from lxdgpu_reconcile.web.board import Board, Observation, Observer
from lxdgpu_reconcile.web.pending import Changes, Planner, summaries
from lxdgpu_reconcile.web.server import create_app, render_page
from lxdgpu_reconcile.web.view import page_data
from tests.unit.web.snapshots import (
    BOTH_UP,
    CLIENT_CERT,
    FLEET,
    ONE_DOWN,
    SERVER01,
    SERVER02,
)

GIB = 1024**3
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def board_with(snapshot: FleetSnapshot, plan: Any = None) -> Board:
    board = Board(lambda o: page_data(FLEET, o, interval=30), plan=plan)
    board.record(snapshot, duration=1, now=T0)
    return board


def containers(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["host"], c["name"]): c for c in data["containers"]}


def action(kind: ActionKind, host: str, name: str, **fields: Any) -> Action:
    ref = ObjectRef(kind=ObjectKind.INSTANCE, name=name)
    return Action(
        id=f"{host}/instance/{name}/{kind.value}", kind=kind, host=host, object=ref, **fields
    )


# --- memory ---------------------------------------------------------------------------------------


def test_memory_used_and_total_are_in_the_api_and_on_the_page() -> None:
    server01 = SERVER01.model_copy(update={"memory_total": 32 * GIB, "memory_used": 25 * GIB // 2})
    snapshot = FleetSnapshot(hosts={"server01": server01, "server02": SERVER02})

    data = board_with(snapshot).current.data
    hosts = {h["name"]: h for h in data["hosts"]}
    page = render_page(data, title="Lab")

    assert hosts["server01"]["memory_total"] == 32 * GIB
    assert hosts["server01"]["memory_used"] == 25 * GIB // 2
    assert "<dt>Memory</dt><dd>12.5 / 32.0 GiB</dd>" in page
    # Not read (an older snapshot, a host without the resources extension): no memory line.
    assert hosts["server02"]["memory_total"] is None and page.count("<dt>Memory</dt>") == 1


def test_memory_without_its_used_part_shows_the_total() -> None:
    server01 = SERVER01.model_copy(update={"memory_total": 64 * GIB})
    data = board_with(FleetSnapshot(hosts={"server01": server01})).current.data

    assert "<dt>Memory</dt><dd>64.0 GiB</dd>" in render_page(data, title="Lab")


def test_a_stale_host_keeps_the_memory_last_read() -> None:
    server02 = SERVER02.model_copy(update={"memory_total": 16 * GIB, "memory_used": 0})
    board = board_with(FleetSnapshot(hosts={"server01": SERVER01, "server02": server02}))
    board.record(ONE_DOWN, duration=1, now=T0)

    host = {h["name"]: h for h in board.current.data["hosts"]}["server02"]
    assert host["stale"] is True and (host["memory_total"], host["memory_used"]) == (16 * GIB, 0)


# --- summaries ------------------------------------------------------------------------------------


def test_summaries_name_actions_and_fields_and_why_they_wait() -> None:
    secret = diff.FieldChange(path=("config", "environment.HF_TOKEN"), old="hf_abc123secret")
    limit = diff.FieldChange(path=("config", "limits.cpu"), old="4", new="8")
    tag = diff.FieldChange(path=("config", "user.lxdgpu.spec-hash"), old="1", new="2")
    update = action(
        ActionKind.UPDATE,
        "server01",
        "alice-container",
        changes=(secret, limit, tag),
        restart=True,
        pending="needs a restart: run with --allow-restart",
        hold=Hold.RESTART,
    )
    helper = action(ActionKind.STOP, "server01", "alice-container", part_of=update.id, pending="x")
    create = action(ActionKind.CREATE, "server02", "bob-container")
    plan = Plan(
        hosts=(HostPlan(host="server01", applyable=True, actions=(helper, update, create)),)
    )

    found = summaries(plan)

    assert found == {
        ("server01", "alice-container"): (
            "update config.environment.HF_TOKEN, config.limits.cpu, pending: needs a restart",
        ),
        ("server02", "bob-container"): ("create",),
    }
    assert "hf_abc123secret" not in repr(found)


def test_a_move_shows_on_the_container_it_leaves_and_on_the_new_one() -> None:
    body = MoveInstanceBody(
        user="alice",
        source_host="server01",
        source_name="alice-container",
        source_observed="f" * 64,
        name="alice-gpu",
        profiles=("default",),
        config={"environment.API_KEY": "sk-live-0123"},
        devices={},
        preserve=rules.Preserve(),
    )
    move = action(ActionKind.MOVE, "server02", "alice-gpu", body=body)
    rename = action(
        ActionKind.RENAME,
        "server01",
        "bob-new",
        body=body.model_copy(update={"source_name": "bob-old", "name": "bob-new"}),
        pending="held",
        hold=Hold.GPU_BUSY,
    )
    plan = Plan(hosts=(HostPlan(host="server02", applyable=True, actions=(move, rename)),))

    found = summaries(plan)

    assert found[("server02", "alice-gpu")] == ("move from server01/alice-container",)
    assert found[("server01", "alice-container")] == ("move to server02/alice-gpu",)
    assert found[("server01", "bob-new")] == ("rename from bob-old, pending: its GPUs are busy",)
    assert found[("server01", "bob-old")] == ("rename to bob-new, pending: its GPUs are busy",)
    assert "sk-live" not in repr(found)


def test_an_update_body_with_a_secret_is_never_summarised_with_its_value() -> None:
    body = InstanceBody(
        profiles=(),
        config={"environment.PASSWORD": "hunter2"},
        devices={},
        preserve=rules.Preserve(),
    )
    update = action(ActionKind.UPDATE, "server01", "alice-container", body=body)

    found = summaries(Plan(hosts=(HostPlan(host="server01", applyable=True, actions=(update,)),)))

    assert found == {("server01", "alice-container"): ("update",)}


# --- the planner on the board ---------------------------------------------------------------------


def test_a_container_with_a_pending_change_shows_it_in_the_api_and_the_notes() -> None:
    board = board_with(BOTH_UP, Planner(FLEET, REAL, lambda: {}))

    data = board.current.data
    alice = containers(data)[("server01", "alice-container")]
    page = render_page(data, title="Lab")

    assert "update config.raw.idmap, pending: needs a restart" in alice["pending"]
    assert "update config.raw.idmap, pending: needs a restart" in page
    assert containers(data)[("server02", "bob-container")]["pending"] == ["plan error: other-owner"]
    assert data["pending_error"] is None


def test_without_a_planner_nothing_is_pending() -> None:
    data = board_with(BOTH_UP).current.data

    assert all(c["pending"] == [] for c in data["containers"]) and data["pending_error"] is None


def test_a_finished_move_shows_where_the_container_went() -> None:
    moved = InstanceObs(
        name="old-alice",
        status="Stopped",
        config={
            "user.lxdgpu.managed": "true",
            TAG_MOVED_TO: "server02/alice-container",
            TAG_MOVED_AT: "2024-05-01T11:00:00+00:00",
        },
    )
    server01 = SERVER01.model_copy(update={"instances": {**SERVER01.instances, moved.name: moved}})
    line = "delete, pending: needs pruning (apply --prune)"
    changes = Changes(by_container={("server01", "old-alice"): (line,)})
    board = board_with(FleetSnapshot(hosts={"server01": server01}), lambda _: changes)

    row = containers(board.current.data)[("server01", "old-alice")]
    page = render_page(board.current.data, title="Lab")

    assert row["moved_to"] == "server02" and row["pending"] == [line]
    assert f"moved to server02; {line}" in page


def test_the_planner_runs_once_per_observation_never_per_view() -> None:
    plans: list[FleetSnapshot] = []

    def plan(snapshot: FleetSnapshot) -> Changes:
        plans.append(snapshot)
        return Changes(by_container={("server01", "alice-container"): ("create",)})

    board = Board(lambda o: page_data(FLEET, o, interval=3600), plan=plan)
    observer = Observer(board, lambda: ONE_DOWN, interval=3600)
    with TestClient(create_app(board)) as client:
        observer.observe_once()
        for _ in range(20):
            for path in ("/", "/api/v1/status", "/metrics", "/healthz"):
                assert client.get(path).status_code == 200
        assert plans == [ONE_DOWN]
        observer.observe_once()
        api = client.get("/api/v1/status").json()
    assert len(plans) == 2
    assert containers(api)[("server01", "alice-container")]["pending"] == ["create"]


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        (
            ToolError(f"cannot read {CLIENT_CERT}", "put it back"),
            "cannot read <certificate file> (put it back)",
        ),
        (RuntimeError("bug"), "the changes could not be planned (RuntimeError)"),
    ],
)
def test_a_plan_that_cannot_be_made_is_an_error_on_the_page_not_a_failed_round(
    failure: Exception, shown: str
) -> None:
    def files() -> dict[str, dict[str, bytes]]:
        raise failure

    board = board_with(BOTH_UP, Planner(FLEET, REAL, files))

    assert board.current.rounds == 1 and board.failures == 0
    assert board.current.data["pending_error"] == shown
    assert CLIENT_CERT not in render_page(board.current.data, title="Lab")
    assert str(escape(shown)) in render_page(board.current.data, title="Lab")


def test_observation_keeps_the_changes_it_was_built_with() -> None:
    board = board_with(BOTH_UP, lambda _: Changes(error="x"))

    assert isinstance(board.current, Observation) and board.current.changes == Changes(error="x")
