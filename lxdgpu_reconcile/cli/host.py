"""``host bootstrap HOST``: the guide's remote-management set-up of one server, in one command.

Thin command over ``service.survey_bootstrap`` and ``execute.bootstrap``: shows what it would
change and the server certificate's fingerprint, asks (unless ``--yes``), changes, then checks
the host over pinned https as ``plan`` connects. Results on standard output, the question on
standard error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, out, read_fleet
from lxdgpu_reconcile.errors import ToolError

if TYPE_CHECKING:
    from lxdgpu_reconcile.execute.bootstrap import Survey

host_app = typer.Typer(
    name="host",
    help=(
        "A server's own system, outside LXD.\n\n"
        "Example: [bold]lxdgpu-reconcile host bootstrap server01[/bold]"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(host_app, name="host")


class NotBootstrapped(ToolError):
    """The admin did not consent (or could not be asked): nothing was changed."""


@host_app.command("bootstrap")
def bootstrap_command(
    host: Annotated[str, typer.Argument(metavar="HOST", help="A host of the fleet file.")],
    fleet: FleetOpt = Path("fleet.yaml"),
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Change without asking (check the fingerprint another way)."
        ),
    ] = False,
    replace_cert: Annotated[
        bool,
        typer.Option(
            "--replace-cert",
            help="Overwrite a server_cert file that holds another certificate (a reinstalled "
            "server).",
        ),
    ] = False,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="ADDRESS:PORT",
            help="Set core.https_address to exactly this (e.g. '[::]:8443', every address). "
            "Default: the endpoint's IP address and port, or [::]:PORT when the endpoint is a "
            "name; an address already set that answers at the endpoint is kept.",
            show_default=False,
        ),
    ] = None,
    ssh_config: Annotated[
        Path | None,
        typer.Option(
            "--ssh-config",
            metavar="FILE",
            help="OpenSSH client configuration to use (ssh -F FILE) instead of ~/.ssh/config.",
            show_default=False,
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option("--local", help="Run on this machine, the server itself, not over SSH."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1, help="Seconds the https check may take.", metavar="S"),
    ] = 30.0,
) -> None:
    """Set up remote management of one server, once: https, trust, pinned certificate.

    LXD listens on the endpoint's address, trusts the admin's certificate (client_cert),
    and the server's certificate is written to server_cert, after showing its fingerprint.

    Reaches the server over SSH (hosts.HOST.ssh), or runs on it with --local. Asks before
    changing anything; a second run changes nothing. Then connects as plan does.

    Example: [bold]lxdgpu-reconcile host bootstrap server01 -f fleet.yaml[/bold]
    """
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.execute import bootstrap
    from lxdgpu_reconcile.site import Site

    read = read_fleet(fleet, certs=False)
    site = Site(ssh_config=str(ssh_config) if ssh_config else None, local=local)
    pending = service.survey_bootstrap(read, host, site, listen=listen, replace_cert=replace_cert)
    plan = pending.survey
    for line in survey_lines(plan):
        out.print(line, markup=False)
    if plan.changes and not yes:
        if not sys.stdin.isatty():
            raise NotBootstrapped(
                "Nothing changed: no terminal to ask on.",
                "check the fingerprint above against the server's own (`lxc info | grep "
                "certificate_fingerprint` on its console), then run again with --yes",
            )
        if not typer.confirm("Make these changes?", default=False, err=True):
            raise NotBootstrapped("Nothing changed.")
    done, version = bootstrap.finish(pending, timeout=timeout)
    for line in done:
        out.print(f"done: {line}", markup=False)
    if not done:
        out.print(f"host {host}: nothing to change", markup=False)
    out.print(
        f"checked: {plan.target.endpoint} answers over pinned https and trusts the admin's "
        f"certificate (LXD {version or 'version unknown'})",
        markup=False,
    )


def survey_lines(plan: Survey) -> list[str]:
    """What bootstrapping changes (``+``/``~``) and keeps (``=``), then the fingerprint."""
    target, server = plan.target, plan.server
    lines = [f"host {target.host} ({server.via}):"]
    if plan.new_address is not None:
        lines.append(
            f"  ~ core.https_address {server.https_address or '(unset)'} -> {plan.new_address}"
        )
    else:
        lines.append(
            f"  = core.https_address {server.https_address} (answers at {target.endpoint})"
        )
    if server.trusted is None:
        lines.append(
            f"  + trust the admin's certificate {target.client_cert} "
            f"(SHA-256 {target.client.fingerprint})"
        )
    else:
        scope = (
            f", restricted to projects {', '.join(server.trusted.projects) or '(none)'}"
            if server.trusted.restricted
            else ""
        )
        lines.append(f"  = the admin's certificate is trusted (as {server.trusted.name!r}{scope})")
    shown = target.server_cert_shown
    if plan.file_state == "absent":
        lines.append(f"  + {shown}: the server's certificate")
    elif plan.file_state == "same":
        lines.append(f"  = {shown} is the server's certificate")
    else:
        held = f"SHA-256 {plan.file_cert.fingerprint}" if plan.file_cert else "no certificate"
        lines.append(f"  ~ {shown}: replaced ({held} now)")
    lines.append(f"server certificate SHA-256 fingerprint: {server.certificate.fingerprint}")
    if plan.write_cert:
        lines.append(
            "  compare it with the server's own before you confirm: `lxc info | grep "
            "certificate_fingerprint` on its console"
        )
    return lines
