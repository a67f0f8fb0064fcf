"""Snapshot files (``status --snapshot-out``, ``plan --state``) without LXD: a plan from a file
is the plan of the observation it was written from; bad files are clear errors."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.execute import builders
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

FLEET = """\
version: 1
hosts:
  server01:
    endpoint: https://192.0.2.11:8443
    client_cert: certs/admin.crt
    client_key: certs/admin.key
    server_cert: certs/server01.crt
  server02: {endpoint: "unix:///nonexistent/unix.socket"}
templates:
  desk: {alias: template-desk, base: busybox, build_host: server01}
users:
  alice: {host: server01, template: desk, uid: 1001, gid: 1001}
  bob: {host: server02, template: desk, uid: 1002, gid: 1002, state: stopped}
"""

SNAPSHOT = FleetSnapshot(
    hosts={
        "server01": HostSnapshot(
            host="server01",
            endpoint="https://192.0.2.11:8443",
            server_version="5.0.2",
            cpus=8,
            profiles={"default": ProfileObs(name="default")},
            images=(ImageObs(fingerprint="a" * 64, aliases=("template-desk",)),),
            pools={"default": PoolObs(name="default", driver="dir")},
            instances={
                "alice-container": InstanceObs(
                    name="alice-container",
                    status="Running",
                    profiles=("default",),
                    config={
                        "user.lxdgpu.managed": "true",
                        "user.lxdgpu.user": "alice",
                        "limits.cpu": "3",
                    },
                )
            },
        ),
        "server02": HostSnapshot(
            host="server02",
            endpoint="unix:///nonexistent/unix.socket",
            server_version="5.0.2",
            cpus=4,
            profiles={"default": ProfileObs(name="default")},
            images=(ImageObs(fingerprint="a" * 64, aliases=("template-desk",)),),
            pools={"default": PoolObs(name="default", driver="dir")},
        ),
    }
)
TAKEN = datetime.datetime(2024, 5, 1, 2, 0, tzinfo=datetime.UTC)
BUILDERS = recipe.LiveBuilders(hostname="cron01", live=frozenset({(4242, 77)}), now=TAKEN)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET)
    certs = tmp_path / "certs"
    certs.mkdir()
    return path


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> list[recipe.LiveBuilders]:
    """Observation and builders as the live hosts give them; what the planner was told."""
    told: list[recipe.LiveBuilders] = []
    monkeypatch.setattr(service, "observe_fleet", lambda *a, **k: SNAPSHOT)
    monkeypatch.setattr(builders, "live_builders", lambda snapshot, **k: BUILDERS)
    make_plan = service.planner.make_plan

    def spy(*args: Any, **kwargs: Any) -> Any:
        told.append(kwargs["builders"])
        return make_plan(*args, **kwargs)

    monkeypatch.setattr(service.planner, "make_plan", spy)
    return told


def test_a_plan_from_a_snapshot_file_is_the_plan_of_its_observation(
    fleet: Path, tmp_path: Path, live: list[recipe.LiveBuilders]
) -> None:
    loaded = service.locate_offline(service.read_fleet(fleet, certs=False), None)
    request = service.PlanRequest(allow_restart=True)
    from_hosts = service.plan(loaded, request, timeout=5)
    path = tmp_path / "snapshot.json"
    snapshot_file.write(path, service.snapshot_text(from_hosts.snapshot))

    saved = snapshot_file.read(path)
    from_file = service.plan(loaded, request, timeout=5, snapshot=saved)

    assert saved.snapshot == SNAPSHOT
    assert from_file.plan.actions, "the case must plan something"
    assert plan_json.render(from_file.plan) == plan_json.render(from_hosts.plan)
    assert live == [BUILDERS, BUILDERS]


def test_the_command_plans_from_a_snapshot_without_certificates(
    fleet: Path, tmp_path: Path, live: list[recipe.LiveBuilders]
) -> None:
    path = tmp_path / "snapshot.json"
    snapshot_file.write(path, service.snapshot_text(SNAPSHOT))
    argv = ["plan", "-f", str(fleet), "--format", "json"]

    offline = CliRunner().invoke(app, [*argv, "--state", str(path), "--detailed-exitcode"])

    # The certificate files do not exist: only --state can plan.
    assert offline.exit_code == 2, offline.output
    assert CliRunner().invoke(app, argv).exit_code == 1
    loaded = service.locate_offline(service.read_fleet(fleet, certs=False), None)
    # The command's request: no option given.
    expected = service.plan(loaded, service.PlanRequest(adopt=()), timeout=5).plan
    assert offline.stdout == plan_json.render(expected)


def _error(tmp_path: Path, text: str | bytes) -> snapshot_file.SnapshotFileError:
    path = tmp_path / "snapshot.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(snapshot_file.SnapshotFileError) as raised:
        snapshot_file.read(path)
    return raised.value


def _good() -> dict[str, Any]:
    text = snapshot_file.dumps(
        SNAPSHOT, taken_at=TAKEN, tool_version="0", hostname="cron01", live=frozenset()
    )
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not a snapshot file (not JSON"),
        (b"\xff\xfe", "is not a snapshot file (not UTF-8)"),
        ('{"ok": true, "hosts": [], "containers": []}', "`status --format json` output is a"),
        ("[]", 'no "format": "lxdgpu-reconcile-snapshot"'),
        (json.dumps({**_good(), "format_version": 9}), "snapshot format version 9"),
        (json.dumps({**_good(), "snapshot": {"hosts": {"s": {}}}}), "snapshot.hosts.s.host"),
        (json.dumps({**_good(), "taken_at": "yesterday"}), "is not a valid snapshot"),
        (json.dumps({**_good(), "taken_at": "2024-05-01T02:00:00"}), "has no time zone"),
        (json.dumps({**_good(), "builders": {"live": [[1]]}}), "is not a valid snapshot"),
    ],
)
def test_a_bad_snapshot_file_is_a_clear_error(tmp_path: Path, text: str | bytes, says: str) -> None:
    error = _error(tmp_path, text)

    assert says in error.message
    assert error.hint


def test_a_missing_snapshot_file_says_how_to_write_one(tmp_path: Path) -> None:
    with pytest.raises(snapshot_file.SnapshotFileError) as raised:
        snapshot_file.read(tmp_path / "none.json")

    assert "cannot read the snapshot file" in raised.value.message
    assert "--snapshot-out" in raised.value.hint


def test_plan_state_refuses_out_and_apply_refuses_state(fleet: Path, tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    snapshot_file.write(path, json.dumps(_good()))

    saving = CliRunner().invoke(
        app, ["plan", "-f", str(fleet), "--state", str(path), "--out", str(tmp_path / "p")]
    )
    applying = CliRunner().invoke(app, ["apply", "-f", str(fleet), "--state", str(path)])

    assert saving.exit_code == 1 and "--out with --state" in saving.stderr
    assert not (tmp_path / "p").exists()
    assert applying.exit_code == 1 and "--state: apply changes the live hosts" in applying.stderr
    assert "Traceback" not in saving.output + applying.output
