"""Options and helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
