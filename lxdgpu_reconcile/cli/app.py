"""The typer application object that every command module registers on, and the one place where
a ``ToolError`` becomes output and an exit status. Prints on standard error; no other I/O.

Every command runs inside ``ToolErrorGroup.invoke``: a ``ToolError`` that leaves a command is
printed (``report_error``: what went wrong, then ``  what to do: HINT``) and the command exits
with the error's ``exit_status``. This holds however ``app`` is invoked (``main``, ``CliRunner``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.cli.common import err_console
from lxdgpu_reconcile.errors import ToolError

#: Output lines of a failed build step shown with the error (the last ones).
TAIL_SHOWN = 20


def error_lines(exc: ToolError) -> list[str]:
    """The lines that report ``exc`` on standard error."""
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.execute.build_outcome import BuildError
    from lxdgpu_reconcile.lab import LabError
    from lxdgpu_reconcile.report import saved_text

    if isinstance(exc, service.StalePlan):
        return saved_text.lines(
            exc.stale, plan_file=exc.plan_file, replan=exc.replan, headline=exc.message
        )
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


def plain_flags(command: Any, ctx: Any) -> Any:
    """``command`` with its on/off flags shown as plain flags in ``--help`` (typer's rich help
    would show them as ``<bool>``, which reads as if they took a value). Returns ``command``."""
    for param in command.get_params(ctx):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        plain_flags(sub, ctx)
    return command


class ToolErrorGroup(TyperGroup):
    """The command group that reports a ``ToolError`` raised by any of its commands and exits
    with its ``exit_status``, and shows on/off flags as plain flags in every ``--help``."""

    def invoke(self, ctx: Any) -> Any:  # typer's (vendored click's) Context
        try:
            return super().invoke(ctx)
        except ToolError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_status) from None

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        return None if command is None else plain_flags(command, ctx)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        plain_flags(self, ctx)
        super().format_help(ctx, formatter)


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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lxdgpu-reconcile {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version (saved plans are applied only by the version that made them) "
            "and exit.",
            callback=_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Declarative management of shared GPU servers running LXD: a git-tracked fleet file is
    validated, compared with every host and applied as an ordered plan."""
