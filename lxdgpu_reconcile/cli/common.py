"""Options and helpers shared by the command modules: the consoles, loading a fleet with its
warnings shown, showing and performing a plan. Prints; other I/O goes through ``service``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from lxdgpu_reconcile.cli import defaults
from lxdgpu_reconcile.errors import ToolError

if TYPE_CHECKING:
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.fleet.models import Fleet
    from lxdgpu_reconcile.planning.model import Plan
    from lxdgpu_reconcile.site import Site

#: Results go to standard output; problems, progress and prompts to standard error.
out = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as stable JSON (sorted keys, two-space indent) for bots."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


#: What to do when the fleet file cannot be read at all.
NAME_THE_FLEET = defaults.NAME_THE_FLEET

FleetOpt = Annotated[
    Path,
    typer.Option("-f", "--fleet", help="The fleet file.", show_default=True),
]
#: ``execute.executor.DEFAULT_PARALLEL``: actions performed at once on one host.
DEFAULT_PARALLEL = 4
ParallelOpt = Annotated[
    int,
    typer.Option(
        "--parallel",
        min=1,
        metavar="N",
        help="Perform up to N actions at once on each host (1: one after another, in plan "
        "order); the steps of one container, and what depends on what, keep their order.",
    ),
]
LabOpt = Annotated[
    Path | None,
    typer.Option(
        "--lab",
        envvar="LXDGPU_LAB",
        help="Point the fleet's hosts at the local lab in DIR (see `lab up`).",
        show_default=False,
    ),
]

LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Run the host layer (accounts, homes, id delegations) on this machine instead of "
        "over SSH, for a tool run on the server it manages.",
    ),
]


def read_fleet(fleet_path: Path, *, certs: bool) -> service.FleetRead:
    """``service.read_fleet``, printing the fleet's warnings on standard error."""
    from lxdgpu_reconcile import service

    read = service.read_fleet(fleet_path, certs=certs)
    for warning in read.warnings:
        err_console.print(str(warning), markup=False, soft_wrap=True)
    return read


def load(fleet_path: Path, lab: Path | None, *, local: bool = False) -> service.Loaded:
    """The fleet as a command that connects to its hosts needs it (``service.load``), printing
    the fleet's warnings on standard error before any later problem is raised. ``local``:
    ``--local``, the host layer on this machine."""
    from lxdgpu_reconcile import service

    return service.locate(read_fleet(fleet_path, certs=lab is None), lab, local=local)


def fleet_for_hosts(fleet_path: Path, lab: Path | None) -> tuple[Fleet, Site]:
    """The fleet pointed at its hosts (or the lab in ``lab``), and where it is realised.

    Raises the ``ToolError`` of ``load``; the command line reports it.
    """
    loaded = load(fleet_path, lab)
    return loaded.fleet, loaded.site


class NotApplied(ToolError):
    """A plan that was shown but not applied (errors in it, or no consent)."""


def show_plan(p: Plan, *, if_errors: str) -> None:
    """Print ``p`` before it is applied; exit when there is nothing to apply.

    Plan-wide errors stop everything (``NotApplied`` saying ``if_errors``); with nothing
    runnable the exit status is 1 when some host has errors, else 0.
    """
    from lxdgpu_reconcile.report import plan_text

    out.print(plan_text.render(p))
    if p.errors:
        raise NotApplied(f"Nothing applied: {if_errors}")
    if not any(a.pending is None for a in p.actions):
        raise typer.Exit(1 if p.all_errors else 0)


def perform(
    p: Plan,
    loaded: service.Loaded,
    *,
    timeout: float,
    request: service.PlanRequest | None = None,
    parallel: int = DEFAULT_PARALLEL,
    credentials: Path | None = None,
) -> NoReturn:
    """Apply ``p`` with progress on standard error, print the outcome, exit 0 or 1.

    ``request``: the options this run was given; its ``--adopt`` and ``--prune`` are all the
    executor may adopt or delete, whatever ``p`` says. ``parallel``: actions at once per host.
    ``credentials``: ``--credentials-dir``. Progress is a live view per host on a terminal,
    plain lines otherwise."""
    from contextlib import nullcontext

    from rich.text import Text

    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.report import apply_live, apply_text

    live = apply_live.LiveProgress(err_console, p) if err_console.is_terminal else None
    with live or nullcontext():
        report = service.apply(
            loaded,
            p,
            timeout=timeout,
            progress=live or apply_text.progress_printer(err_console),
            request=request,
            parallel=parallel,
            credentials=credentials,
        )
    out.print(Text())
    for line in apply_text.lines(p, report):
        out.print(line)
    raise typer.Exit(0 if report.ok and not p.all_errors else 1)
