"""What a fleet needs on the machine before its containers can start in the lab.

Pure: reads a ``Fleet`` and returns plain data; ``lab.lifecycle`` does the work. Accounts, homes
and id delegations are not among them: each lab host has a system of its own, where the tool's
apply makes them, as on a real host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lxdgpu_reconcile.fleet.models import Fleet


@dataclass(frozen=True)
class LabNeeds:
    """The host-side things the fleet's profiles, templates and users refer to."""

    hosts: tuple[str, ...]
    #: Interfaces that macvlan NICs name as their parent.
    nic_parents: tuple[str, ...]
    #: Host directories (real path form) that disk devices and CUDA trees mount, shared by the
    #: lab's hosts.
    host_dirs: tuple[str, ...]
    #: Aliases the lab's busybox image is imported under on every host.
    image_aliases: tuple[str, ...]
    #: Fleet hosts that are clusters -> their members' names (``cluster.members``, or
    #: ``node1``, ``node2`` when the fleet lists none): one lab daemon per member.
    clusters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def daemons(self) -> tuple[str, ...]:
        """Every lab daemon's key: a host's name, or ``CLUSTER/MEMBER`` for a member."""
        return tuple(
            key
            for host in self.hosts
            for key in (
                [member_key(host, m) for m in self.clusters[host]]
                if host in self.clusters
                else [host]
            )
        )


def needs_of(fleet: Fleet) -> LabNeeds:
    """Everything the lab must prepare for ``fleet``."""
    return LabNeeds(
        hosts=tuple(fleet.hosts),
        nic_parents=nic_parents(fleet),
        host_dirs=host_dirs(fleet),
        image_aliases=image_aliases(fleet),
        clusters=clusters(fleet),
    )


#: A lab cluster's members when the fleet lists none.
DEFAULT_MEMBERS = ("node1", "node2")


def clusters(fleet: Fleet) -> dict[str, tuple[str, ...]]:
    """Each cluster host's members as the lab makes them (the first bootstraps the cluster)."""
    return {
        name: tuple(host.cluster.members or DEFAULT_MEMBERS)
        for name, host in fleet.hosts.items()
        if host.cluster is not None
    }


def member_key(cluster: str, member: str) -> str:
    """The lab's key of a cluster member's daemon (``lab exec CLUSTER/MEMBER``)."""
    return f"{cluster}/{member}"


def _devices(fleet: Fleet) -> list[dict[str, str]]:
    return [dict(dev) for profile in fleet.profiles.values() for dev in profile.devices.values()]


def nic_parents(fleet: Fleet) -> tuple[str, ...]:
    """Parents of the fleet's macvlan NICs, sorted."""
    return tuple(
        sorted(
            {
                dev["parent"]
                for dev in _devices(fleet)
                if dev.get("type") == "nic"
                and dev.get("nictype") == "macvlan"
                and dev.get("parent")
            }
        )
    )


def host_dirs(fleet: Fleet) -> tuple[str, ...]:
    """Host directories of disk devices (not pool volumes) and CUDA trees, sorted."""
    sources = {
        dev["source"]
        for dev in _devices(fleet)
        if dev.get("type") == "disk" and dev.get("source", "").startswith("/") and "pool" not in dev
    }
    return tuple(sorted(sources | set(fleet.cuda.values())))


def image_aliases(fleet: Fleet) -> tuple[str, ...]:
    """Each template's base alias (without its image server) and the template's own alias.

    Until a template is built, user containers launch from the template alias, so the lab
    provides both.
    """
    aliases: list[str] = []
    for template in fleet.templates.values():
        for alias in (base_alias(template.base), template.alias):
            if alias not in aliases:
                aliases.append(alias)
    return tuple(aliases)


def base_alias(base: str) -> str:
    """``SERVER:ALIAS`` -> ``ALIAS``; a local alias stays as it is."""
    return base.split(":", 1)[1] if ":" in base else base
