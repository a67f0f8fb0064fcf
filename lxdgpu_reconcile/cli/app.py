"""The typer application object that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lxdgpu-reconcile",
    help=(
        "Declarative management of shared GPU servers running LXD: a git-tracked fleet file is "
        "validated, compared with every host and applied as an ordered plan."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
