"""The fleet status page: every host and every container, for admins and for users who look up
their container's address.

Pure: builds rows from a ``Fleet`` and a ``FleetSnapshot`` and renders them as a rich renderable
(``status_table``) or as stable JSON data (``status_json``, documented in docs/status.md). The
command line prints; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.state import (
    TAG_MOVED_AT,
    TAG_MOVED_TO,
    TAG_USER,
    Address,
    FleetSnapshot,
    GpuObs,
    HostError,
    HostSnapshot,
    InstanceObs,
    MemberObs,
)

#: Version of the JSON shape; bumped when a field changes meaning or disappears.
JSON_FORMAT = 1

#: ``state`` of a container the fleet declares but its (readable) host does not have.
ABSENT = "absent"
#: ``state`` of a container the fleet declares on a host that could not be read.
UNKNOWN = "unknown"
#: ``state`` of a container on a cluster member that is not online (it could not be seen).
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class HostRow:
    name: str
    endpoint: str
    error: HostError | None
    lxd_version: str
    cpus: int
    gpus: tuple[GpuObs, ...]
    gpus_expected: int | None
    containers: int
    #: A cluster host's members.
    members: tuple[MemberObs, ...] = ()


@dataclass(frozen=True)
class ContainerRow:
    host: str
    name: str
    type: str
    user: str | None
    declared: bool
    managed: bool
    state: str
    addresses: tuple[Address, ...]  # global-scope addresses only
    profiles: tuple[str, ...]
    cpu_limit: str | None
    image: str | None
    image_fingerprint: str | None
    template: str | None
    #: The host a move took the container to (``user.lxdgpu.moved-to``), once the move finished.
    moved_to: str | None = None
    #: On a cluster host: the member the container is on.
    member: str | None = None

    def ips(self, family: str) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses if a.family == family)


@dataclass(frozen=True)
class StatusReport:
    hosts: tuple[HostRow, ...]
    containers: tuple[ContainerRow, ...]

    @property
    def ok(self) -> bool:
        """Every host could be read."""
        return all(host.error is None for host in self.hosts)


def status_report(fleet: Fleet, snapshot: FleetSnapshot) -> StatusReport:
    """The rows of the status page: hosts by name, containers by host and name.

    A container's user is the fleet user it is declared for, else its ``user.lxdgpu.user`` tag.
    Containers the fleet declares but the snapshot lacks are listed with state ``absent`` (host
    read) or ``unknown`` (host unreadable).
    """
    owners = {(user.host, fleet.container_of(name)): name for name, user in fleet.users.items()}
    hosts: list[HostRow] = []
    containers: list[ContainerRow] = []
    for name in sorted(snapshot.hosts):
        snap = snapshot.hosts[name]
        spec = fleet.hosts.get(name)
        hosts.append(
            HostRow(
                name=name,
                endpoint=snap.endpoint,
                error=snap.error,
                lxd_version=snap.server_version,
                cpus=snap.cpus,
                gpus=snap.gpus,
                gpus_expected=spec.gpus if spec else None,
                containers=len(snap.instances) + len(snap.unseen),
                members=snap.members,
            )
        )
        for container, member in snap.unseen.items():
            user = owners.get((name, container))
            containers.append(_unseen_row(fleet, snap, container, member, user))
        for instance in snap.instances.values():
            containers.append(
                _observed_row(fleet, snap, instance, owners.get((name, instance.name)))
            )
        for (host, container), user in owners.items():
            if host == name and container not in snap.instances and container not in snap.unseen:
                containers.append(_declared_row(fleet, snap, container, user))
    containers.sort(key=lambda row: (row.host, row.name))
    return StatusReport(hosts=tuple(hosts), containers=tuple(containers))


def _observed_row(
    fleet: Fleet, snap: HostSnapshot, instance: InstanceObs, declared_user: str | None
) -> ContainerRow:
    fingerprint = instance.config.get("volatile.base_image") or None
    image = next((i for i in snap.images if i.fingerprint == fingerprint), None)
    aliases = image.aliases if image else ()
    # An image often has several aliases; the one a fleet template publishes says the most.
    by_alias = {spec.alias: name for name, spec in fleet.templates.items()}
    alias = next((a for a in aliases if a in by_alias), aliases[0] if aliases else None)
    if declared_user is not None:
        template: str | None = fleet.users[declared_user].template
    else:
        template = by_alias.get(alias) if alias else None
    return ContainerRow(
        host=snap.host,
        name=instance.name,
        type=instance.type,
        user=declared_user or instance.config.get(TAG_USER),
        declared=declared_user is not None,
        managed=instance.managed,
        state=instance.status.lower(),
        addresses=tuple(a for a in instance.addresses if a.scope == "global"),
        profiles=instance.profiles,
        cpu_limit=instance.expanded_config.get("limits.cpu") or None,
        image=alias
        or instance.config.get("image.description")
        or (fingerprint[:12] if fingerprint else None),
        image_fingerprint=fingerprint,
        template=template,
        moved_to=_moved_to(instance),
        member=instance.location or None,
    )


def _unseen_row(
    fleet: Fleet, snap: HostSnapshot, container: str, member: str, user: str | None
) -> ContainerRow:
    """A container on a cluster member that is not online: only its name and member are known."""
    return ContainerRow(
        host=snap.host,
        name=container,
        type="container",
        user=user,
        declared=user is not None,
        managed=False,
        state=UNREACHABLE,
        addresses=(),
        profiles=(),
        cpu_limit=None,
        image=None,
        image_fingerprint=None,
        template=fleet.users[user].template if user is not None else None,
        member=member,
    )


def _moved_to(instance: InstanceObs) -> str | None:
    """The host a finished move took ``instance`` to (it stays, stopped, until ``--prune``)."""
    if TAG_MOVED_AT not in instance.config:
        return None
    return instance.config.get(TAG_MOVED_TO, "").partition("/")[0] or None


def _declared_row(fleet: Fleet, snap: HostSnapshot, container: str, user: str) -> ContainerRow:
    return ContainerRow(
        host=snap.host,
        name=container,
        type="container",
        user=user,
        declared=True,
        managed=False,
        state=ABSENT if snap.reachable else UNKNOWN,
        addresses=(),
        profiles=(),
        cpu_limit=None,
        image=None,
        image_fingerprint=None,
        template=fleet.users[user].template,
    )


# --- JSON -----------------------------------------------------------------------------------------


def status_json(fleet: Fleet, snapshot: FleetSnapshot) -> dict[str, Any]:
    """The status page as JSON data; the shape is documented in docs/status.md."""
    report = status_report(fleet, snapshot)
    return {
        "format": JSON_FORMAT,
        "ok": report.ok,
        "hosts": [_host_json(row) for row in report.hosts],
        "containers": [_container_json(row) for row in report.containers],
    }


def _host_json(row: HostRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "endpoint": row.endpoint,
        "reachable": row.error is None,
        "error": None
        if row.error is None
        else {"kind": row.error.kind.value, "message": row.error.message, "hint": row.error.hint},
        "lxd_version": row.lxd_version or None,
        "cpus": row.cpus if row.error is None else None,
        "gpus": None
        if row.error is not None
        else [
            {
                "id": gpu.id,
                "vendor": gpu.vendor,
                "product": gpu.product,
                "driver": gpu.driver,
                "pci_address": gpu.pci_address,
                "nvidia_uuid": gpu.nvidia_uuid or None,
            }
            for gpu in row.gpus
        ],
        "gpus_expected": row.gpus_expected,
        "containers": row.containers if row.error is None else None,
        # Only on a cluster host: its members.
        **({"members": [_member_json(m) for m in row.members]} if row.members else {}),
    }


def _member_json(member: MemberObs) -> dict[str, Any]:
    return {
        "name": member.name,
        "status": member.status,
        "cpus": member.cpus if member.online else None,
        "gpus": [gpu.id for gpu in member.gpus] if member.online else None,
    }


def _container_json(row: ContainerRow) -> dict[str, Any]:
    return {
        "host": row.host,
        "name": row.name,
        "type": row.type,
        "user": row.user,
        "declared": row.declared,
        "managed": row.managed,
        "state": row.state,
        "ipv4": list(row.ips("inet")),
        "ipv6": list(row.ips("inet6")),
        "profiles": list(row.profiles),
        "cpu_limit": row.cpu_limit,
        "image": row.image,
        "image_fingerprint": row.image_fingerprint,
        "template": row.template,
        # Only on the source of a finished move: "moved to HOST" in the table.
        **({"moved_to": row.moved_to} if row.moved_to else {}),
        # Only on a cluster host: the member the container is on.
        **({"member": row.member} if row.member else {}),
    }


# --- rich -----------------------------------------------------------------------------------------

_STATE_STYLE = {
    "running": "green",
    "stopped": "yellow",
    "frozen": "cyan",
    "error": "red",
    ABSENT: "magenta",
    UNKNOWN: "dim",
    UNREACHABLE: "red",
}


def status_table(fleet: Fleet, snapshot: FleetSnapshot) -> RenderableType:
    """The status page for a terminal: a hosts table, a containers table, then each host's
    problem with what to do about it."""
    report = status_report(fleet, snapshot)
    parts: list[RenderableType] = [_hosts_table(report), *_containers_tables(report)]
    for row in report.hosts:
        if row.error is not None:
            parts.append(
                Text.assemble(
                    (row.error.message, "red"), "\n  ", ("what to do: ", "bold"), row.error.hint
                )
            )
    return Group(*parts)


def _hosts_table(report: StatusReport) -> Table:
    table = Table(title="Hosts", title_justify="left", box=box.SIMPLE, pad_edge=False)
    for column in ("Host", "Endpoint", "Status", "LXD", "CPUs", "GPUs", "Containers"):
        right = column in ("CPUs", "Containers")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for row in report.hosts:
        if row.error is not None:
            status = Text(row.error.kind.value, style="bold red")
            _add_row(table, row.name, row.endpoint, status, "-", "-", "-", "-")
            continue
        _add_row(
            table,
            row.name,
            row.endpoint,
            Text("ok", style="green"),
            row.lxd_version,
            str(row.cpus),
            _gpus_cell(row),
            str(row.containers),
        )
    return table


def _add_row(table: Table, *cells: str | Text) -> None:
    """Add a row whose text is shown as it is: names and descriptions are never rich markup."""
    table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))


def _gpus_cell(row: HostRow) -> Text:
    if not row.gpus:
        text = Text("none")
    else:
        text = Text(
            "\n".join(
                f"{gpu.id}: {gpu.product or gpu.vendor or gpu.pci_address}" for gpu in row.gpus
            )
        )
    if row.gpus_expected is not None and row.gpus_expected != len(row.gpus):
        text.append(f"\nfleet expects {row.gpus_expected}", style="bold yellow")
    return text


def _containers_tables(report: StatusReport) -> list[Table]:
    """One table per host, so the host's name is said once and the rows stay narrow."""
    tables = []
    for host in report.hosts:
        rows = [row for row in report.containers if row.host == host.name]
        if not rows:
            continue
        table = Table(
            title=f"Containers on {host.name}", title_justify="left", box=box.SIMPLE, pad_edge=False
        )
        clustered = bool(host.members)
        cells = [
            (
                f"{row.name} ({row.member})" if clustered and row.member else row.name,
                row.user or "-",
                Text(_state_cell(row), style=_STATE_STYLE.get(row.state, "")),
                _addresses_cell(row, "inet"),
                _addresses_cell(row, "inet6"),
                ", ".join(row.profiles) or "-",
                row.cpu_limit or "-",
                _image_cell(row),
                _managed_cell(row),
            )
            for row in rows
        ]
        first = "Container (member)" if clustered else "Container"
        for index, column in enumerate(
            (first, "User", "State", "IPv4", "IPv6", "Profiles", "CPU", "Image", "Managed")
        ):
            # Names, states and IPv4 addresses (what users look up) are not folded on narrow
            # terminals; the other columns give way first.
            whole = column in (first, "User", "State", "IPv4")
            widest = max(len(column), *(len(str(cell[index]).split("\n")[0]) for cell in cells))
            table.add_column(column, overflow="fold", min_width=widest if whole else None)
        for cell in cells:
            _add_row(table, *cell)
        tables.append(table)
    return tables


def _state_cell(row: ContainerRow) -> str:
    return f"{row.state}, moved to {row.moved_to}" if row.moved_to else row.state


def _image_cell(row: ContainerRow) -> str:
    if row.template and row.template != row.image:
        return f"{row.template} ({row.image})" if row.image else row.template
    return row.image or "-"


def _managed_cell(row: ContainerRow) -> str | Text:
    if row.state in (ABSENT, UNKNOWN, UNREACHABLE):
        return "-"
    return "yes" if row.managed else Text("no", style="dim")


def _addresses_cell(row: ContainerRow, family: str) -> str:
    """The addresses of ``family``, each with its interface when there are several interfaces."""
    several = len({a.interface for a in row.addresses}) > 1
    lines = [
        f"{a.address} ({a.interface})" if several else a.address
        for a in row.addresses
        if a.family == family
    ]
    return "\n".join(lines) or "-"
