"""``lab up``, ``lab down``, ``lab env`` and ``lab exec``: the local lab of real LXD daemons.

Thin commands over ``lxdgpu_reconcile.lab``, which does the I/O. Progress goes to standard
error; ``lab env`` prints shell lines on standard output; ``lab exec`` runs a command on a lab
host with this process's standard streams and exits with its status. Every failure is a
``LabError`` that the command line (``cli.app``) reports as one line, ``error: ...`` saying what
went wrong and what to do, with exit code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lxdgpu_reconcile.cli import defaults
from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, err_console, out, read_fleet

lab_app = typer.Typer(
    name="lab",
    help=(
        "Rehearse a fleet on this machine: one real LXD daemon per host, on loopback https.\n\n"
        "Example: [bold]lxdgpu-reconcile lab up -f fleet.yaml[/bold]"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(lab_app, name="lab")

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="LXDGPU_LAB",
        help="The lab directory.",
        show_default=True,
    ),
]


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


@lab_app.command("up")
def up(
    fleet: FleetOpt = Path("fleet.yaml"),
    lab_dir: DirOpt = defaults.LAB_DIR,
) -> None:
    """Start one LXD daemon per host of the fleet on this machine (root; reuses a running lab).

    Example: [bold]lxdgpu-reconcile lab up -f fleet.yaml --dir /var/tmp/lab[/bold]
    """
    from lxdgpu_reconcile import lab as labs

    loaded = read_fleet(fleet, certs=False).fleet
    state = labs.lab_up(loaded, lab_dir, progress=_say)
    for name, host in state.hosts.items():
        if name in loaded.hosts or host.cluster in loaded.hosts:
            ssh = f", ssh 127.0.0.1:{host.ssh_port}" if host.ssh_port else ""
            out.print(
                f"{name}: {host.endpoint} (LXD_DIR={host.lxd_dir}){ssh}",
                markup=False,
                soft_wrap=True,
            )
    _say(
        f"lab ready: rehearse with `--lab {state.dir}` (or LXDGPU_LAB={state.dir}); "
        f'poke a host with `eval "$(lxdgpu-reconcile lab env HOST --dir {state.dir})"`, '
        f"`lxdgpu-reconcile lab exec HOST -- CMD` or `ssh -F {state.ssh_config} HOST`"
    )


@lab_app.command("down")
def down(lab_dir: DirOpt = defaults.LAB_DIR) -> None:
    """Stop the lab's daemons and remove what the lab made and no other lab still uses.

    Example: [bold]lxdgpu-reconcile lab down --dir /var/tmp/lab[/bold]
    """
    from lxdgpu_reconcile import lab as labs

    labs.lab_down(lab_dir, progress=_say)


@lab_app.command("env")
def env(
    host: Annotated[str, typer.Argument(help="A host of the fleet, e.g. server01.")],
    lab_dir: DirOpt = defaults.LAB_DIR,
) -> None:
    """Print the shell lines that point plain `lxc` at HOST's lab daemon.

    Example: [bold]eval "$(lxdgpu-reconcile lab env server01)"; lxc list[/bold]
    """
    from lxdgpu_reconcile import service

    text = service.lab_env(lab_dir, host)
    typer.echo(text, nl=False)


@lab_app.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
def exec_(
    host: Annotated[str, typer.Argument(help="A host of the lab, e.g. server01.")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
    lab_dir: DirOpt = defaults.LAB_DIR,
) -> None:
    """Run a command on a lab host, in its own system (its /etc and /home); exits with its status.

    The command runs as root in the host's namespace with LXD_DIR set to the host's daemon, so
    plain `lxc` and `lxd` talk to it.

    Example: [bold]lxdgpu-reconcile lab exec server02 -- getent passwd tom[/bold]
    """
    from lxdgpu_reconcile import lab as labs
    from lxdgpu_reconcile import service

    if command[:1] == ["--"]:  # kept by the parser once HOST ends the options
        command = command[1:]
    try:
        status = labs.lab_exec(lab_dir, host, command)
    except OSError as exc:
        raise service.unreadable_lab(lab_dir, exc) from None
    raise typer.Exit(status)
