"""The one mapping from ``ToolError`` to output and exit status, however the app is invoked."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.cli.app import ToolErrorGroup, error_lines
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.lab import LabError
from lxdgpu_reconcile.observe.connect import HostConnectError
from lxdgpu_reconcile.planning.saving import Stale
from lxdgpu_reconcile.reconcile.lock import LockTimeout
from lxdgpu_reconcile.report import saved_text
from lxdgpu_reconcile.state import HostErrorKind

runner = CliRunner()


def _app_raising(exc: Exception) -> typer.Typer:
    demo = typer.Typer(cls=ToolErrorGroup)

    @demo.command()
    def fail() -> None:
        raise exc

    @demo.command()
    def other() -> None:
        """A second command, so that the app is a group."""

    return demo


@pytest.mark.parametrize(
    ("exc", "status", "stderr"),
    [
        (ToolError("it broke", "fix it"), 1, "it broke\n  what to do: fix it\n"),
        (ToolError("no hint here"), 1, "no hint here\n"),
        (LockTimeout("held", "wait"), 4, "held\n  what to do: wait\n"),
        (LabError("no lab; run lab up"), 1, "error: no lab; run lab up\n"),
    ],
)
def test_a_tool_error_becomes_its_message_hint_and_exit_status(
    exc: ToolError, status: int, stderr: str
) -> None:
    result = runner.invoke(_app_raising(exc), ["fail"])

    assert result.exit_code == status
    assert result.stderr == stderr and result.stdout == ""
    assert isinstance(result.exception, SystemExit)


def test_other_exceptions_are_not_swallowed() -> None:
    result = runner.invoke(_app_raising(RuntimeError("bug")), ["fail"])

    assert isinstance(result.exception, RuntimeError)


def test_a_stale_plan_is_reported_reason_by_reason() -> None:
    stale = (Stale(message="container a changed"), Stale(message="profile p changed"))
    exc = service.StalePlan(stale, plan_file="plan.json", replan="lxdgpu-reconcile plan")

    assert error_lines(exc) == saved_text.lines(
        stale, plan_file="plan.json", replan="lxdgpu-reconcile plan"
    )


def test_unusable_hosts_are_each_reported_with_what_to_do() -> None:
    errors = tuple(
        HostConnectError(HostErrorKind.CONFIG, f"host {name}: bad", f"fix {name}")
        for name in ("a", "b")
    )

    lines = error_lines(service.UnusableHosts(errors))

    assert lines == ["host a: bad\n  what to do: fix a", "host b: bad\n  what to do: fix b"]


def test_a_bad_fleet_through_the_real_app_prints_each_problem_then_what_to_do(
    tmp_path: Path,
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")

    result = runner.invoke(app, ["plan", "-f", str(fleet)])

    assert result.exit_code == 1 and result.stdout == ""
    *problems, hint = result.stderr.splitlines()
    assert problems and all(line.startswith(f"{fleet}:3:3: users.tom.") for line in problems)
    validate = f"`lxdgpu-reconcile validate -f {fleet}`"
    assert hint == f"  what to do: fix the fleet file ({validate}) and run again"
