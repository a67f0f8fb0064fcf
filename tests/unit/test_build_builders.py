"""A build container is a leftover only when its builder is gone: the rule
(``recipe.running_builder``), the planner's note, the ``/proc`` reader and the facts that
``service.plan`` hands the planner."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from lxdgpu_reconcile import service, state
from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.execute import builders
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.templates import recipe
from tests.unit.planning.test_planning_templates import BASE, FLEET, built, host, kinds

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.UTC)
HERE = "admin-box"


def builder(
    host_name: str = HERE, pid: int = 4242, start: int = 777, hours_ago: float = 1
) -> recipe.Builder:
    started = NOW - datetime.timedelta(hours=hours_ago)
    return recipe.Builder(host=host_name, pid=pid, start=start, started=started)


def facts(*live: tuple[int, int]) -> recipe.LiveBuilders:
    return recipe.LiveBuilders(hostname=HERE, live=frozenset(live), now=NOW)


def config(who: recipe.Builder | None) -> dict[str, str]:
    return recipe.build_container_config("tools", who)


# --- the rule -------------------------------------------------------------------------------


def test_a_build_whose_builder_runs_here_is_in_progress() -> None:
    assert recipe.running_builder(config(builder()), facts((4242, 777))) == builder()


def test_a_build_whose_builder_died_here_is_a_leftover() -> None:
    assert recipe.running_builder(config(builder()), facts()) is None


def test_a_pid_reused_by_another_process_is_not_the_builder() -> None:
    assert recipe.running_builder(config(builder()), facts((4242, 999))) is None


def test_another_machines_build_is_in_progress_until_the_age_limit() -> None:
    young = builder("other-box", hours_ago=23)
    old = builder("other-box", hours_ago=25)
    assert datetime.timedelta(hours=24) == recipe.FOREIGN_BUILD_MAX_AGE
    assert recipe.running_builder(config(young), facts()) == young
    assert recipe.running_builder(config(old), facts()) is None


def test_a_build_container_without_builder_tags_is_a_leftover() -> None:
    assert recipe.running_builder(config(None), facts()) is None
    assert recipe.running_builder(config(None), None) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (recipe.TAG_BUILDER_PID, "x"),
        (recipe.TAG_BUILDER_PID, "0"),
        (recipe.TAG_BUILDER_START, ""),
        (recipe.TAG_BUILD_STARTED, "yesterday"),
        (recipe.TAG_BUILDER_HOST, ""),
    ],
)
def test_unreadable_builder_tags_are_a_leftover(key: str, value: str) -> None:
    tags = config(builder()) | {key: value}
    assert recipe.builder_of(tags) is None
    assert recipe.running_builder(tags, facts((4242, 777))) is None


def test_without_facts_a_tagged_build_is_taken_for_one_in_progress() -> None:
    assert recipe.running_builder(config(builder(hours_ago=1000)), None) is not None


def test_builder_tags_read_back() -> None:
    tags = recipe.builder_tags(builder())
    assert tags == {
        "user.lxdgpu.builder-host": HERE,
        "user.lxdgpu.builder-pid": "4242",
        "user.lxdgpu.builder-start": "777",
        "user.lxdgpu.build-started": "2025-03-01T11:00:00+00:00",
    }
    assert recipe.builder_of(tags) == builder()


# --- the planner ----------------------------------------------------------------------------


def _plan_with(
    who: recipe.Builder | None, live: recipe.LiveBuilders | None, **options: Any
) -> planning.Plan:
    obs = state.InstanceObs(name="lxdgpu-build-tools-abc123", status="Running", config=config(who))
    h1 = host("h1", BASE, built(), instances={obs.name: obs})
    snapshot = state.FleetSnapshot(hosts={"h1": h1, "h2": host("h2", built())})
    return planner.make_plan(FLEET, snapshot, sites.REAL, builders=live, **options)


@pytest.mark.parametrize("only_template", [None, "tools"])
def test_a_build_in_progress_is_not_deleted_and_is_noted(only_template: str | None) -> None:
    plan = _plan_with(builder(), facts((4242, 777)), only_template=only_template)
    assert kinds(plan, "h1") == []
    assert plan.summary.delete == 0
    assert (
        "lxdgpu-build-tools-abc123: build of template tools in progress, run by pid 4242 on "
        "admin-box since 2025-03-01T11:00:00+00:00; not deleted"
    ) in plan.notes


@pytest.mark.parametrize("only_template", [None, "tools"])
def test_a_build_whose_builder_is_gone_is_deleted(only_template: str | None) -> None:
    plan = _plan_with(builder(), facts(), only_template=only_template)
    assert kinds(plan, "h1") == [
        ("stop", "lxdgpu-build-tools-abc123", None),
        ("delete", "lxdgpu-build-tools-abc123", None),
    ]
    assert not any("in progress" in note for note in plan.notes)


def test_without_facts_the_planner_keeps_a_tagged_build_and_says_it_did_not_check() -> None:
    plan = _plan_with(builder(), None)
    assert kinds(plan, "h1") == []
    assert any("in progress" in n and "was not checked" in n for n in plan.notes)


# --- /proc and the service ------------------------------------------------------------------


def test_process_start_reads_field_22_past_a_command_with_spaces(tmp_path: Path) -> None:
    fields = ["S", *map(str, range(4, 22)), "123456", "0"]
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text(f"42 (my (odd) cmd) {' '.join(fields)}\n")
    assert builders.process_start(42, proc=tmp_path) == 123456
    assert builders.process_start(43, proc=tmp_path) is None
    (tmp_path / "42" / "stat").write_text("42 (cut")
    assert builders.process_start(42, proc=tmp_path) is None


def test_this_process_is_a_live_builder() -> None:
    me = builders.this_builder(NOW)
    assert (me.host, me.pid, me.started) == (socket.gethostname(), os.getpid(), NOW)
    assert me.start == builders.process_start(os.getpid()) and me.start > 0


def _snapshot(*builders_of: recipe.Builder) -> state.FleetSnapshot:
    instances = {
        f"lxdgpu-build-tools-{n}": state.InstanceObs(
            name=f"lxdgpu-build-tools-{n}", status="Running", config=config(who)
        )
        for n, who in enumerate(builders_of)
    }
    return state.FleetSnapshot(hosts={"h1": host("h1", instances=instances)})


def test_live_builders_reads_only_the_pids_of_this_machines_builds() -> None:
    here = socket.gethostname()
    snapshot = _snapshot(
        builder(here, pid=10, start=1), builder(here, pid=11, start=2), builder("elsewhere", 12)
    )
    asked: list[int] = []

    def reader(pid: int) -> int | None:
        asked.append(pid)
        return {10: 1, 11: 5}.get(pid)

    found = builders.live_builders(snapshot, reader=reader, now=NOW)
    assert asked == [10, 11]
    assert found == recipe.LiveBuilders(hostname=here, live=frozenset({(10, 1), (11, 5)}), now=NOW)


UNIX_FLEET = """\
version: 1
hosts:
  h1: {endpoint: "unix:///nonexistent/unix.socket"}
"""


def test_plan_hands_the_planner_the_live_builders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fleet.yaml").write_text(UNIX_FLEET)
    loaded = service.load(tmp_path / "fleet.yaml", None)
    here = socket.gethostname()
    snapshot = _snapshot(builder(here, pid=10, start=1), builder(here, pid=11, start=2))
    seen: dict[str, Any] = {}

    def make_plan(fleet: Any, snap: Any, site: Any, **options: Any) -> planning.Plan:
        seen.update(options)
        return planning.Plan()

    monkeypatch.setattr(service, "observe_fleet", lambda *a, **k: snapshot)
    monkeypatch.setattr(planner, "make_plan", make_plan)
    monkeypatch.setattr(builders, "process_start", {10: 1}.get)

    service.plan(loaded, service.PlanRequest(), timeout=5)

    facts_given = seen["builders"]
    assert isinstance(facts_given, recipe.LiveBuilders)
    assert (facts_given.hostname, facts_given.live) == (here, frozenset({(10, 1)}))
    assert facts_given.now.tzinfo is not None
