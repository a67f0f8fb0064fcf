"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.site import Site

if TYPE_CHECKING:
    from lxdgpu_reconcile.planning.model import Plan

#: Results go to standard output; problems, progress and prompts to standard error.
out = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as stable JSON (sorted keys, two-space indent) for bots."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


#: What to do when the fleet file cannot be read at all.
NAME_THE_FLEET = "name the fleet file with -f FLEET (default: fleet.yaml in this directory)"

FleetOpt = Annotated[
    Path,
    typer.Option("-f", "--fleet", help="The fleet file.", show_default=True),
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


def load_valid_fleet(fleet_path: Path, *, certs: bool) -> Fleet:
    """The fleet in ``fleet_path``; on any error prints every problem and what to do, exits 1.

    ``certs``: missing certificate files of https hosts are errors too (for commands that
    connect to the real hosts; a validate only warns about them). Other warnings are printed on
    standard error and the fleet is returned.
    """
    result = load_fleet(fleet_path)
    errors = result.errors + (result.missing_certs if certs else ())
    if not errors and result.fleet is not None:
        missing_certs = {(p.line, p.col, p.path) for p in result.missing_certs}
        for warning in result.warnings:
            if (warning.line, warning.col, warning.path) not in missing_certs:
                err_console.print(str(warning), markup=False, soft_wrap=True)
        return result.fleet
    for problem in sorted(errors):
        err_console.print(str(problem), markup=False, soft_wrap=True)
    err_console.print(f"  what to do: {fix_fleet_hint(fleet_path)}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def fix_fleet_hint(fleet_path: Path) -> str:
    """What to do about a fleet file that could not be used."""
    if not fleet_path.is_file():
        return NAME_THE_FLEET
    return f"fix the fleet file (`lxdgpu-reconcile validate -f {fleet_path}`) and run again"


def fleet_for_hosts(fleet_path: Path, lab: Path | None) -> tuple[Fleet, Site]:
    """The fleet as a command that connects to its hosts needs it, and where it is realised.

    Loads ``fleet_path``, points the hosts at the lab in ``lab`` when given, and checks that every
    host can be connected to as configured (certificate files present and readable). On any
    problem prints each one with what to do and exits 1.
    """
    # Imported here: pylxd and the lab are needed only by commands that connect.
    from lxdgpu_reconcile.lab import LabError, site_for
    from lxdgpu_reconcile.observe import connect as connecting

    loaded = load_valid_fleet(fleet_path, certs=lab is None)
    try:
        fleet, site = site_for(loaded, lab)
    except LabError as exc:
        err_console.print(f"lab: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        err_console.print(lab_dir_problem(lab, exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    unusable = [
        found
        for name, host in fleet.hosts.items()
        if (found := connecting.check_config(name, host))
    ]
    for found in unusable:
        err_console.print(
            f"{found.message}\n  what to do: {found.hint}", markup=False, soft_wrap=True
        )
    if unusable:
        raise typer.Exit(1)
    return fleet, site


def lab_dir_problem(lab_dir: Path | None, exc: OSError) -> str:
    """What to say when the lab directory cannot be read at all (not a directory, no access)."""
    return (
        f"lab: cannot read the lab in {lab_dir}: {exc.strerror or exc}\n"
        "  what to do: give --lab (or LXDGPU_LAB) the directory `lxdgpu-reconcile lab up` made"
    )


def read_template_files(fleet: Fleet, fleet_path: Path) -> dict[str, dict[str, bytes]]:
    """The contents of every template's files (``source:`` relative to the fleet file); on a
    missing or unreadable file prints what to do and exits 1."""
    from lxdgpu_reconcile.templates.sources import TemplateFileError, template_files

    try:
        return {
            name: template_files(template, fleet_path.parent)
            for name, template in fleet.templates.items()
        }
    except TemplateFileError as exc:
        err_console.print(f"{exc.message}\n  what to do: {exc.hint}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def show_plan(p: Plan, *, if_errors: str) -> None:
    """Print ``p`` before it is applied; exit when there is nothing to apply.

    Plan-wide errors stop everything (exit 1, saying ``if_errors``); with nothing runnable the
    exit status is 1 when some host has errors, else 0.
    """
    from lxdgpu_reconcile.report import plan_text

    out.print(plan_text.render(p))
    if p.errors:
        err_console.print(f"Nothing applied: {if_errors}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    if not any(a.pending is None for a in p.actions):
        raise typer.Exit(1 if p.all_errors else 0)


def perform(p: Plan, fleet: Fleet, fleet_path: Path, *, timeout: float) -> NoReturn:
    """Apply ``p`` with progress on standard error, print the outcome, exit 0 or 1."""
    from rich.text import Text

    from lxdgpu_reconcile.execute import executor
    from lxdgpu_reconcile.report import apply_text

    report = executor.apply_plan(
        p,
        fleet,
        timeout=timeout,
        progress=apply_text.progress_printer(err_console),
        template_files=read_template_files(fleet, fleet_path),
    )
    out.print(Text())
    for line in apply_text.lines(p, report):
        out.print(line)
    raise typer.Exit(0 if report.ok and not p.all_errors else 1)
