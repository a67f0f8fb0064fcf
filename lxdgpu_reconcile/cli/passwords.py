"""``credentials USER`` and ``reset-password USER``: the first passwords the tool set in users'
containers, kept in the admin's credentials store (``execute.credentials``).

``credentials`` reads a local file only. ``reset-password`` connects to the user's host and sets
a new password in the running container (``execute.passwords``). ``CredentialsDirOpt`` is also
an option of ``apply`` and ``reconcile``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, err_console, load, out
from lxdgpu_reconcile.errors import ToolError

#: ``execute.credentials.ENV_VAR`` (the command line does not import the executor to register).
CREDENTIALS_ENV = "LXDGPU_RECONCILE_CREDENTIALS"

CredentialsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--credentials-dir",
        envvar=CREDENTIALS_ENV,
        metavar="DIR",
        help="Where the first passwords of new containers are kept (one file per user, mode "
        "0600, in a directory of mode 0700). Default: ${XDG_STATE_HOME:-~/.local/state}/"
        "lxdgpu-reconcile/credentials/FLEET-ID (one per fleet file); in the lab, LAB/credentials.",
        show_default=False,
    ),
]
UserArg = Annotated[str, typer.Argument(metavar="USER", help="A user of the fleet file.")]


def _store_dir(fleet: Path, lab: Path | None, given: Path | None) -> Path:
    from lxdgpu_reconcile.execute.credentials import directory_for

    return directory_for(fleet, given=given, lab_dir=str(lab.resolve()) if lab else None)


@app.command()
def credentials(
    user: UserArg,
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    credentials_dir: CredentialsDirOpt = None,
) -> None:
    """Show the first password the tool set in USER's container, and where it is kept.

    Prints the container user's password (and VNC password) from the credentials store, and the
    file; reads that file only.

    Exit status: 0 shown, 1 none stored (the message says why and what to do).

    Example: [bold]lxdgpu-reconcile credentials tom[/bold]
    """
    from lxdgpu_reconcile.execute.credentials import CredentialStore

    store = CredentialStore(_store_dir(fleet, lab, credentials_dir))
    found = store.read(user)
    path = store.path_of(user)
    if found is None:
        raise ToolError(
            f"no password is stored for {user} ({path} does not exist)",
            "the tool stores one when apply creates and starts a user's container; a container "
            "made before, adopted, created stopped or on another machine has none here (the "
            "store is per fleet file path and per lab, or --credentials-dir). To set one now, "
            f"in the running container: `lxdgpu-reconcile reset-password {user}`",
        )
    state = "expired: the first login must change it"
    if found.set_at is None:
        state = (
            "NOT CONFIRMED: setting it failed or was cut short, it may not be in effect; run "
            f"`lxdgpu-reconcile reset-password {user}`"
        )
    lines = [
        f"{found.user}: {found.container_user} in {found.container} on {found.host}",
        f"  password:      {found.password}",
    ]
    if found.vnc_password is not None:
        lines.append(f"  VNC password:  {found.vnc_password}")
    lines += [
        f"  set at:        {found.set_at or '-'} ({state})",
        f"  file:          {path}",
    ]
    for line in lines:
        out.print(line, markup=False, highlight=False)


@app.command("reset-password")
def reset_password(
    user: UserArg,
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    credentials_dir: CredentialsDirOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Reset without asking.")] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds the host gets to answer each request.", min=0.1)
    ] = 60.0,
) -> None:
    """Set a new first password in USER's running container, and keep it.

    A new random password, expired, for the container user (and a new VNC password when the
    template runs VNC), written to the credentials store first. Apply never resets a password;
    this command does, on request.

    Example: [bold]lxdgpu-reconcile reset-password tom[/bold]
    """
    from lxdgpu_reconcile.execute import credentials as stored
    from lxdgpu_reconcile.execute import passwords
    from lxdgpu_reconcile.observe import connect as connecting

    loaded = load(fleet, lab)
    host, container = passwords.target_of(loaded.fleet, user)
    store = stored.CredentialStore(_store_dir(fleet, lab, credentials_dir))
    store.ready()
    if not yes:
        if not sys.stdin.isatty():
            raise ToolError(
                "Not reset: no terminal to ask on", "run with --yes to reset the password"
            )
        question = (
            f"Set a new password for {loaded.fleet.defaults.container_user} in {host}:{container}"
            "? The current one stops working."
        )
        if not typer.confirm(question, default=False, err=True):
            raise ToolError("Not reset.")
    client = connecting.connect(host, loaded.fleet.hosts[host], timeout=timeout)
    try:
        done = passwords.reset_password(client, store, loaded.fleet, user, timeout=timeout)
    finally:
        client.close()
    vnc = " and a new VNC password" if done.vnc_password is not None else ""
    err_console.print(
        f"{user}: a new password for {done.container_user}{vnc} in {host}:{container}, "
        f"expired; `lxdgpu-reconcile credentials {user}` shows it ({store.path_of(user)})",
        markup=False,
        highlight=False,
    )
