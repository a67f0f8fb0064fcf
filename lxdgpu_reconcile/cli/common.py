"""Options and helpers shared by the command modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

#: Results go to standard output; problems, progress and prompts to standard error.
out = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def echo_json(data: Any) -> None:
    """Print ``data`` as stable JSON (sorted keys, two-space indent) for bots."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


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
