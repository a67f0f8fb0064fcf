"""``validate`` and ``schema``: offline checks of a fleet file. No LXD is touched."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import (
    NAME_THE_FLEET,
    FleetOpt,
    LabOpt,
    echo_json,
    err_console,
    out,
)

if TYPE_CHECKING:
    from lxdgpu_reconcile.fleet.models import Fleet


class ProblemFormat(StrEnum):
    text = "text"
    json = "json"


@app.command()
def validate(
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    output: Annotated[
        ProblemFormat,
        typer.Option("--format", help="text: one problem per line; json: a list for bots."),
    ] = ProblemFormat.text,
    lab: LabOpt = None,
    skip_certs: Annotated[
        bool,
        typer.Option(
            "--skip-certs",
            help="Do not require the certificate files the fleet names (a CI job without the "
            "client key; plan still requires them).",
        ),
    ] = False,
) -> None:
    """Check a fleet file offline and print every problem with its line.

    Everything that would stop plan from starting is an error, including certificate files the
    fleet names that are not on this machine; with --lab (the lab's own certificates) those are
    not needed, nor with --skip-certs.

    Example: [bold]lxdgpu-reconcile validate -f fleet.yaml[/bold]

    Example: [bold]lxdgpu-reconcile validate -f fleet.yaml --lab /var/tmp/lab[/bold]
    """
    from lxdgpu_reconcile.fleet.loading import load_fleet

    result = load_fleet(fleet)
    problems = result.reported(certs=lab is None and not skip_certs)
    errors = [p for p in problems if p.severity == "error"]
    if output is ProblemFormat.json:
        echo_json([p.as_json() for p in problems])
    else:
        for problem in problems:
            out.print(str(problem), markup=False, soft_wrap=True)
    if errors or result.fleet is None:
        if output is ProblemFormat.text:
            count = len(errors)
            hint = "fix them and run validate again" if fleet.is_file() else NAME_THE_FLEET
            err_console.print(
                f"{fleet}: {count} error{'s' if count != 1 else ''}; {hint}",
                markup=False,
                highlight=False,
            )
        raise typer.Exit(1)
    if output is ProblemFormat.text:
        assert result.fleet is not None
        out.print(summary(result.fleet, str(fleet)), markup=False, highlight=False)


def summary(fleet: Fleet, name: str) -> str:
    """The one-line summary of a valid fleet."""
    counts = [
        (len(fleet.hosts), "host"),
        (len(fleet.profiles), "profile"),
        (len(fleet.templates), "template"),
        (len(fleet.users), "user"),
    ]
    parts = ", ".join(f"{n} {word}{'' if n == 1 else 's'}" for n, word in counts)
    return f"{name}: valid ({parts})"


@app.command()
def schema() -> None:
    """Print the JSON Schema of the fleet file, for editor completion.

    Example: [bold]lxdgpu-reconcile schema > fleet.schema.json[/bold]
    """
    from lxdgpu_reconcile.fleet.models import Fleet

    echo_json(Fleet.model_json_schema(mode="validation"))
