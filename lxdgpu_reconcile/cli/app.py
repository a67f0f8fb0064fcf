"""The typer application object that every command module registers on, and the one place where
a ``ToolError`` becomes output and an exit status. Prints on standard error; no other I/O.

Every command runs inside ``ToolErrorGroup.invoke``: a ``ToolError`` that leaves a command is
printed (``report_error``: what went wrong, then ``  what to do: HINT``) and the command exits
with the error's ``exit_status``. This holds however ``app`` is invoked (``main``, ``CliRunner``).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli.common import err_console
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute.build_outcome import BuildError
from lxdgpu_reconcile.lab import LabError
from lxdgpu_reconcile.report import saved_text

#: Output lines of a failed build step shown with the error (the last ones).
TAIL_SHOWN = 20


def error_lines(exc: ToolError) -> list[str]:
    """The lines that report ``exc`` on standard error."""
    if isinstance(exc, service.StalePlan):
        return saved_text.lines(exc.stale, plan_file=exc.plan_file, replan=exc.replan)
    if isinstance(exc, service.UnusableHosts):
        return [f"{e.message}\n  what to do: {e.hint}" for e in exc.errors]
    if isinstance(exc, service.FleetProblems):
        lines = [str(problem) for problem in exc.problems]
    elif isinstance(exc, BuildError):
        lines = []
        if exc.tail:
            lines.append("last output of the step:")
            lines.extend(f"    {line}" for line in exc.tail[-TAIL_SHOWN:])
        lines.append(f"error: {exc.message}")
    elif isinstance(exc, LabError):
        lines = [f"error: {exc.message}"]
    else:
        lines = [exc.message]
    if exc.hint:
        lines.append(f"  what to do: {exc.hint}")
    return lines


def report_error(exc: ToolError) -> None:
    """Print ``exc`` on standard error: what went wrong, then what to do."""
    for line in error_lines(exc):
        err_console.print(line, markup=False, soft_wrap=True)


class ToolErrorGroup(TyperGroup):
    """The command group that reports a ``ToolError`` raised by any of its commands and exits
    with its ``exit_status``."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored click's) Context
        try:
            return super().invoke(ctx)
        except ToolError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_status) from None


app = typer.Typer(
    name="lxdgpu-reconcile",
    cls=ToolErrorGroup,
    help=(
        "Declarative management of shared GPU servers running LXD: a git-tracked fleet file is "
        "validated, compared with every host and applied as an ordered plan."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
