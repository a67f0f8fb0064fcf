"""The service layer without LXD: a fleet that cannot be used, a lab or host configuration that
cannot be used, saved plans refused before any host is asked, and options forwarded to the
planner and the executor."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from lxdgpu_reconcile import service
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute.results import ApplyReport
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import saving
from lxdgpu_reconcile.state import FleetSnapshot
from lxdgpu_reconcile.templates.sources import TemplateFileError
from tests.helpers import saved_plan_file

UNIX_FLEET = """\
version: 1
hosts:
  server01: {endpoint: "unix:///nonexistent/unix.socket", gpus: 2}
templates:
  desk:
    alias: template-desk
    base: busybox
    build_host: server01
    files: [{path: /etc/motd, source: motd.txt}]
users:
  alice: {host: server01, template: desk, uid: 1001, gid: 1001}
"""

HTTPS_FLEET = """\
version: 1
hosts:
  server01:
    endpoint: https://192.0.2.11:8443
    client_cert: certs/admin.crt
    client_key: certs/admin.key
    server_cert: certs/server01.crt
"""


def _write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_bad_fleet_raises_every_problem_with_its_line(tmp_path: Path) -> None:
    fleet = _write(tmp_path, "version: 1\nusers:\n  tom: {host: nowhere}\n")

    with pytest.raises(service.FleetProblems) as caught:
        service.read_fleet(fleet, certs=True)

    lines = [str(problem) for problem in caught.value.problems]
    assert lines == sorted(lines) and len(lines) >= 3
    assert all(line.startswith(f"{fleet}:3:3: users.tom.") for line in lines)
    assert caught.value.message == "\n".join(lines)
    assert (
        caught.value.hint
        == f"fix the fleet file (`lxdgpu-reconcile validate -f {fleet}`) and run again"
    )
    assert caught.value.exit_status == 1


def test_a_missing_fleet_file_says_to_name_it(tmp_path: Path) -> None:
    with pytest.raises(service.FleetProblems) as caught:
        service.read_fleet(tmp_path / "fleet.yaml", certs=False)

    assert "cannot read the fleet file" in caught.value.message
    assert caught.value.hint == service.NAME_THE_FLEET


def test_missing_certificates_are_errors_only_when_required(tmp_path: Path) -> None:
    fleet = _write(tmp_path, HTTPS_FLEET)

    with pytest.raises(service.FleetProblems) as caught:
        service.read_fleet(fleet, certs=True)
    assert [p.line for p in caught.value.problems] == [5, 6, 7]

    read = service.read_fleet(fleet, certs=False)
    assert read.warnings == () and set(read.fleet.hosts) == {"server01"}


def test_hosts_that_cannot_be_connected_to_are_all_reported(tmp_path: Path) -> None:
    fleet = _write(tmp_path, HTTPS_FLEET)
    read = service.read_fleet(fleet, certs=False)

    with pytest.raises(service.UnusableHosts) as caught:
        service.locate(read, None)

    assert [e.message.split(":")[0] for e in caught.value.errors] == ["host server01"]
    assert all(e.hint for e in caught.value.errors)


def test_a_file_given_as_the_lab_is_one_error(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    (tmp_path / "motd.txt").write_text("hello\n")

    with pytest.raises(service.UnusableLab) as caught:
        service.load(fleet, fleet)

    assert caught.value.message == f"lab: cannot read the lab in {fleet}: Not a directory"
    assert "lab up" in caught.value.hint


def test_template_files_are_read_when_first_needed(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    with pytest.raises(service.FleetProblems) as caught:  # validate: the source must exist
        service.load(fleet, None)
    assert "templates.desk.files[0].source: 'motd.txt' does not exist" in caught.value.message

    (tmp_path / "motd.txt").write_text("hello\n")
    loaded = service.load(fleet, None)
    (tmp_path / "motd.txt").unlink()  # gone after validation: read only when first needed
    with pytest.raises(TemplateFileError):
        _ = loaded.template_files

    (tmp_path / "motd.txt").write_text("hello\n")
    assert service.load(fleet, None).template_files == {"desk": {"/etc/motd": b"hello\n"}}


def test_plan_forwards_every_option_to_the_planner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "motd.txt").write_text("hello\n")
    loaded = service.load(_write(tmp_path, UNIX_FLEET), None)
    snapshot = FleetSnapshot()
    seen: dict[str, Any] = {}

    def make_plan(fleet: Any, snap: Any, site: Any, **options: Any) -> planning.Plan:
        seen.update(options, snapshot=snap, site=site)
        return planning.Plan()

    observed: list[Any] = []

    def observe(fleet: Any, timeout: float, hosts: Any, **more: Any) -> FleetSnapshot:
        observed.append(hosts)
        seen_shells.append(more.get("open_shell"))
        return snapshot

    seen_shells: list[Any] = []
    monkeypatch.setattr(service, "observe_fleet", observe)
    monkeypatch.setattr(service.planner, "make_plan", make_plan)
    request = service.PlanRequest(
        targets=("alice",),
        prune=True,
        adopt=("x",),
        allow_restart=True,
        touch_unmanaged=True,
        only_template="desk",
        force_build=True,
        distribute=False,
    )

    planned = service.plan(loaded, request, timeout=5)

    assert planned.snapshot is snapshot and planned.plan == planning.Plan()
    # Which builders live is a fact of this machine, not an option (tests/unit/test_build_builders).
    assert seen.pop("builders").live == frozenset()
    assert seen == {
        "snapshot": snapshot,
        "site": loaded.site,
        "targets": ("alice",),
        "prune": True,
        "adopt": ("x",),
        "allow_restart": True,
        "touch_unmanaged": True,
        "template_files": {"desk": {"/etc/motd": b"hello\n"}},
        "only_template": "desk",
        "force_build": True,
        "distribute": False,
    }
    # A plan of one template observes only the hosts it builds on and copies to, and reads no
    # host's own system (it plans no host layer).
    assert observed == [(loaded.fleet.templates["desk"].build_host,)]
    assert seen_shells == [None]


def test_a_plan_reads_each_hosts_own_system_as_the_site_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "motd.txt").write_text("hello\n")
    read = service.read_fleet(_write(tmp_path, UNIX_FLEET), certs=False)
    seen: list[dict[str, Any]] = []

    def observe(fleet: Any, timeout: float, hosts: Any, **more: Any) -> FleetSnapshot:
        seen.append(more)
        return FleetSnapshot()

    monkeypatch.setattr(service, "observe_fleet", observe)
    monkeypatch.setattr(service.planner, "make_plan", lambda *a, **k: planning.Plan())
    monkeypatch.setattr(service.moves, "hold_busy", lambda made, *a, **k: made)

    for local in (False, True):
        loaded = service.locate(read, None, local=local)
        service.plan(loaded, service.PlanRequest(), timeout=5)
        assert seen[-1]["site"] == loaded.site
        shell = seen[-1]["open_shell"](next(iter(loaded.fleet.hosts)))
        assert (shell is not None and shell.via == "local") if local else shell is None


def test_apply_hands_the_template_files_to_the_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "motd.txt").write_text("hello\n")
    loaded = service.load(_write(tmp_path, UNIX_FLEET), None)
    seen: dict[str, Any] = {}

    def apply_plan(plan: Any, fleet: Any, **options: Any) -> ApplyReport:
        seen.update(options, fleet=fleet)
        return ApplyReport()

    monkeypatch.setattr(service.executor, "apply_plan", apply_plan)

    assert service.apply(loaded, planning.Plan(), timeout=7) == ApplyReport()
    assert seen["fleet"] is loaded.fleet and seen["timeout"] == 7
    assert seen["template_files"] == {"desk": {"/etc/motd": b"hello\n"}}


def test_a_saved_plan_whose_fleet_changed_is_stale_with_the_reason(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    plan_file = saved_plan_file(tmp_path, fleet, sha="0" * 64)

    with pytest.raises(service.StalePlan) as caught:
        service.open_saved(plan_file, fleet=None, lab=None)

    stale = caught.value
    assert stale.message == f"{plan_file} is stale: nothing was applied."
    assert stale.plan_file == str(plan_file)
    assert stale.replan == f"lxdgpu-reconcile plan -f {fleet} --out {plan_file}"
    (reason,) = stale.stale
    assert reason.message.startswith(f"the fleet file {fleet} changed since the plan was made")


def test_a_saved_plan_that_still_applies_is_opened(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    plan_file = saved_plan_file(tmp_path, fleet)

    opened = service.open_saved(plan_file, fleet=None, lab=None)

    assert (opened.fleet_path, opened.lab, opened.plan_file) == (fleet, None, plan_file)
    assert opened.digest == hashlib.sha256(fleet.read_bytes()).hexdigest()


def test_a_saved_plan_for_the_real_hosts_is_refused_for_a_lab(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    plan_file = saved_plan_file(tmp_path, fleet)

    with pytest.raises(saving.SavedPlanError, match="was made for the real hosts"):
        service.open_saved(plan_file, fleet=None, lab=tmp_path / "lab")


@pytest.mark.parametrize(
    ("name", "message"),
    [("fleet.yaml", "looks like a fleet file"), ("missing.json", "cannot read")],
)
def test_what_is_not_a_saved_plan_is_refused(tmp_path: Path, name: str, message: str) -> None:
    _write(tmp_path, UNIX_FLEET)

    with pytest.raises(saving.SavedPlanError, match=message) as caught:
        service.open_saved(tmp_path / name, fleet=None, lab=None)
    assert caught.value.hint


def test_a_plan_is_not_saved_when_the_fleet_changed_meanwhile(tmp_path: Path) -> None:
    fleet = _write(tmp_path, UNIX_FLEET)
    planned = service.Planned(plan=planning.Plan(), snapshot=FleetSnapshot())

    with pytest.raises(ToolError, match="changed while the plan was being made"):
        service.saved_plan(planned, fleet_path=fleet, digest="0", lab=None)

    digest = service.fleet_digest(fleet)
    (tmp_path / "p.json").write_text(
        service.saved_plan(planned, fleet_path=fleet, digest=digest, lab=None)
    )
    assert service.open_saved(tmp_path / "p.json", fleet=None, lab=None).digest == digest


def test_an_unreadable_fleet_has_no_digest(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="cannot read the fleet file") as caught:
        service.fleet_digest(tmp_path / "fleet.yaml")
    assert caught.value.hint == "give its path with -f FLEET"
