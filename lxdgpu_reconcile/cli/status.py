"""``status``: every host and every container of the fleet, read live from LXD.

Reads only (the fleet file through ``service``, then every host); writes nothing to any host.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import (
    FleetOpt,
    LabOpt,
    LocalOpt,
    echo_json,
    err_console,
    load,
    out,
)

if TYPE_CHECKING:
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.state import FleetSnapshot


class StatusFormat(StrEnum):
    table = "table"
    json = "json"


@app.command()
def status(
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    output: Annotated[
        StatusFormat | None,
        typer.Option(
            "--format",
            help="table: for people; json: stable, for scripts (docs/status.md). "
            "Default: table on a terminal, json otherwise.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds each host gets to answer.", min=0.1),
    ] = 30.0,
    snapshot_out: Annotated[
        Path | None,
        typer.Option(
            "--snapshot-out",
            help="Also save what was read as a snapshot file, for `plan --state FILE` "
            "(docs/performance.md).",
            show_default=False,
        ),
    ] = None,
    local: LocalOpt = False,
) -> None:
    """Show every host and every container of the fleet, read live. Changes nothing.

    Hosts: reachable or not, LXD version, CPUs, GPUs. Containers: user, state, IPv4/IPv6
    addresses, profiles, CPU limit, image, managed or not.

    Exits 1 when a host could not be read; the other hosts are still shown.

    Example: [bold]lxdgpu-reconcile status -f fleet.yaml[/bold]

    Example: [bold]lxdgpu-reconcile status -f fleet.yaml --format json | jq '.containers[]'[/bold]
    """
    from lxdgpu_reconcile.report.status import status_json, status_table

    loaded = load(fleet, lab, local=local)
    spec = loaded.fleet
    snapshot = observe_fleet(loaded, timeout=timeout, addresses=True)
    if snapshot_out is not None:
        from lxdgpu_reconcile import service
        from lxdgpu_reconcile.observe import snapshot_file

        snapshot_file.write(snapshot_out, service.snapshot_text(snapshot))
    if output is None:
        output = StatusFormat.table if sys.stdout.isatty() else StatusFormat.json
    if output is StatusFormat.json:
        echo_json(status_json(spec, snapshot))
    else:
        out.print(status_table(spec, snapshot))
    failed = {name: snap.error for name, snap in snapshot.hosts.items() if snap.error is not None}
    if failed:
        err_console.print(
            f"could not read {len(failed)} of {len(snapshot.hosts)} hosts: "
            + ", ".join(f"{name} ({error.kind.value})" for name, error in failed.items()),
            markup=False,
            soft_wrap=True,
        )
    unread = [
        facts.error
        for snap in snapshot.hosts.values()
        for facts in (snap.facts, *snap.member_facts.values())
        if facts is not None and facts.error is not None
    ]
    for error in unread:
        err_console.print(
            f"{error.message}\n  what to do: {error.hint}", markup=False, soft_wrap=True
        )
    if failed or unread:
        raise typer.Exit(1)


def observe_fleet(loaded: service.Loaded, *, timeout: float, addresses: bool) -> FleetSnapshot:
    """``observe.reading.observe_fleet``, imported when ``status`` runs (it brings LXD's client),
    with each host's own system read as ``plan`` reads it (``hosts.NAME.ssh``, ``--local``)."""
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.observe.reading import observe_fleet as observe

    return observe(
        loaded.fleet,
        timeout=timeout,
        addresses=addresses,
        open_shell=service.host_shells(loaded),
        site=loaded.site,
    )
