"""``reconcile --snapshot-out FILE`` through the command line, with the observation and the apply
replaced (no LXD): the file is the observation the run planned from, written before anything is
applied, and ``plan --state FILE`` gives the plan of that observation; a run that could not
observe writes no file and says nothing more."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.execute import builders
from lxdgpu_reconcile.execute.results import ApplyReport
from lxdgpu_reconcile.observe import snapshot_file
from lxdgpu_reconcile.report import plan_json
from lxdgpu_reconcile.state import (
    FleetSnapshot,
    HostSnapshot,
    ImageObs,
    InstanceObs,
    PoolObs,
    ProfileObs,
)
from lxdgpu_reconcile.templates import recipe
from tests.helpers import lock_held

FLEET = """\
version: 1
hosts:
  server01: {endpoint: "unix:///nonexistent/one.socket"}
  server02: {endpoint: "unix:///nonexistent/two.socket"}
templates:
  desk: {alias: template-desk, base: busybox, build_host: server01}
users:
  alice: {host: server01, template: desk, uid: 1001, gid: 1001}
  bob: {host: server02, template: desk, uid: 1002, gid: 1002}
"""


def _host(name: str, **more: Any) -> HostSnapshot:
    return HostSnapshot(
        host=name,
        endpoint=f"unix:///nonexistent/{name}.socket",
        server_version="5.0.2",
        cpus=4,
        profiles={"default": ProfileObs(name="default")},
        pools={"default": PoolObs(name="default", driver="dir")},
        images=(ImageObs(fingerprint="a" * 64, aliases=("template-desk",)),),
        **more,
    )


SNAPSHOT = FleetSnapshot(
    hosts={
        "server01": _host(
            "server01",
            instances={
                "alice-container": InstanceObs(
                    name="alice-container",
                    status="Running",
                    profiles=("default",),
                    config={"user.lxdgpu.managed": "true", "user.lxdgpu.user": "alice"},
                )
            },
        ),
        "server02": _host("server02"),
    }
)
TAKEN = datetime.datetime(2024, 5, 1, 2, 0, tzinfo=datetime.UTC)
BUILDERS = recipe.LiveBuilders(hostname="cron01", live=frozenset({(4242, 77)}), now=TAKEN)
runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    return path


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every plan the planner made (before a reconcile policy holds anything back)."""
    plans: list[Any] = []
    make_plan = service.planner.make_plan

    def spy(*args: Any, **kwargs: Any) -> Any:
        plans.append(make_plan(*args, **kwargs))
        return plans[-1]

    monkeypatch.setattr(service.planner, "make_plan", spy)
    return plans


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """The hosts answer with SNAPSHOT; the plans handed to the executor, which does nothing and
    records whether the snapshot file existed by then."""
    monkeypatch.setattr(service, "observe_fleet", lambda *a, **k: SNAPSHOT)
    monkeypatch.setattr(builders, "live_builders", lambda snapshot, **k: BUILDERS)
    plans: list[Any] = []

    def apply_plan(plan: Any, fleet: Any, **options: Any) -> ApplyReport:
        plans.append((plan, (tmp_path / "out" / "snapshot.json").exists()))
        return ApplyReport()

    monkeypatch.setattr(service.executor, "apply_plan", apply_plan)
    return plans


def _reconcile(tmp_path: Path, fleet: Path, *more: str) -> Any:
    argv = ["reconcile", "-f", str(fleet), "--lock-file", str(tmp_path / "lock"), *more]
    return runner.invoke(app, argv)


def test_the_snapshot_is_the_observation_the_run_planned_from(
    tmp_path: Path, fleet: Path, applied: list[Any], made: list[Any]
) -> None:
    path = tmp_path / "out" / "snapshot.json"
    result = _reconcile(tmp_path, fleet, "--snapshot-out", str(path))

    assert result.exit_code == 3, result.output  # the restart is held back by the policy
    ((_governed, existed),) = applied
    assert not existed  # written once the run is over, whole
    saved = snapshot_file.read(path)
    assert saved.snapshot == SNAPSHOT
    assert (saved.taken_at, saved.hostname, saved.live) == (TAKEN, "cron01", BUILDERS.live)
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary file

    offline = runner.invoke(
        app, ["plan", "-f", str(fleet), "--state", str(path), "--format", "json"]
    )
    assert offline.exit_code == 0, offline.output
    live, from_file = made  # the run's plan, before its policy held the restart back
    assert live.actions, "the case must plan something"
    assert plan_json.render(from_file) == offline.stdout
    assert _without_adopt(offline.stdout) == _without_adopt(plan_json.render(live))


def _without_adopt(text: str) -> Any:
    """A JSON plan without ``options.adopt``: ``plan`` records no ``--adopt`` as ``[]``,
    ``reconcile`` (which has no such option) as ``false``; they plan alike."""
    data = json.loads(text)
    assert data["options"].pop("adopt") in ([], False)
    return data


def test_without_the_option_no_snapshot_is_written(
    tmp_path: Path, fleet: Path, applied: list[Any]
) -> None:
    quiet = _reconcile(tmp_path, fleet, "--quiet")

    assert quiet.exit_code == 3 and quiet.output == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.yaml", "lock"]


def test_a_run_that_fails_after_observing_still_writes_its_snapshot(
    tmp_path: Path, fleet: Path, applied: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> ApplyReport:
        raise RuntimeError("boom")

    monkeypatch.setattr(service.executor, "apply_plan", broken)
    path = tmp_path / "snapshot.json"
    result = _reconcile(tmp_path, fleet, "--snapshot-out", str(path), "--quiet")

    assert result.exit_code == 1
    assert "unexpected error (RuntimeError: boom)" in result.output
    assert snapshot_file.read(path).snapshot == SNAPSHOT


def test_a_bad_fleet_file_writes_no_snapshot_and_says_nothing_more(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")
    path = tmp_path / "snapshot.json"

    without = _reconcile(tmp_path, fleet, "--quiet")
    with_it = _reconcile(tmp_path, fleet, "--quiet", "--snapshot-out", str(path))

    assert with_it.exit_code == without.exit_code == 1
    assert with_it.output == without.output and "users.tom" in with_it.output
    assert not path.exists()


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    with lock_held(tmp_path / "held.lock") as path:
        yield path


def test_a_run_without_the_lock_writes_no_snapshot_and_says_nothing_more(
    tmp_path: Path, fleet: Path, held_lock: Path, applied: list[Any]
) -> None:
    path = tmp_path / "snapshot.json"
    argv = ["reconcile", "-f", str(fleet), "--lock-file", str(held_lock), "--lock-wait", "0.1"]

    without = runner.invoke(app, argv)
    with_it = runner.invoke(app, [*argv, "--snapshot-out", str(path)])

    assert with_it.exit_code == without.exit_code == 4
    assert with_it.output == without.output
    assert not path.exists() and applied == []


def test_a_snapshot_that_cannot_be_written_is_an_error_after_the_run(
    tmp_path: Path, fleet: Path, applied: list[Any]
) -> None:
    (tmp_path / "file").write_text("not a directory\n")
    path = tmp_path / "file" / "snapshot.json"
    log = tmp_path / "r.jsonl"
    result = _reconcile(tmp_path, fleet, "--snapshot-out", str(path), "--log-file", str(log))

    assert result.exit_code == 1
    assert f"cannot write the snapshot file {path}: " in result.output
    assert "what to do: free space" in result.output and "Traceback" not in result.output
    ((_plan, _written),) = applied  # the run itself went on: it applied, and logged its result
    assert json.loads(log.read_text().splitlines()[-1])["result"] == "pending"
