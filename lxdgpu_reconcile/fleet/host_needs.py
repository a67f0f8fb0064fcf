"""What a fleet needs of a host's own system, read off the fleet file. Pure: no I/O.

Shared by the expansion of the desired LXD objects (``planning.desired``, which mounts these
paths) and by the reading of each host's facts (``observe.host_facts``, which asks the host
whether they exist), so that both name the same paths:

- ``home_source``: the host path of a user's home (``defaults.home_source``);
- ``disk_source``: the host path a profile's disk device mounts (not a pool volume);
- ``nic_parent``: the host interface a ``macvlan`` or ``ipvlan`` NIC device sits on;
- ``profiles_on``: the declared profiles a host gets for some of its users.

Paths are as the fleet file writes them; the caller moves them onto its site
(``site.host_path``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxdgpu_reconcile.fleet.models import Defaults, Fleet

#: NIC types whose ``parent`` is an interface of the host itself.
PARENT_NIC_TYPES = ("macvlan", "ipvlan")


def home_source(defaults: Defaults, user: str) -> str:
    """The host path of ``user``'s home: ``defaults.home_source`` with ``{user}`` filled in."""
    return defaults.home_source.replace("{user}", user)


def disk_source(device: Mapping[str, str]) -> str | None:
    """The host path ``device`` mounts: the absolute ``source`` of a disk device that is not a
    storage pool volume; None for any other device."""
    source = device.get("source", "")
    if device.get("type") == "disk" and "pool" not in device and source.startswith("/"):
        return source
    return None


def nic_parent(device: Mapping[str, str]) -> str | None:
    """The host interface a ``macvlan``/``ipvlan`` NIC device names as ``parent``; None for any
    other device (a bridged NIC, a NIC on a managed ``network``)."""
    if device.get("type") != "nic" or device.get("nictype") not in PARENT_NIC_TYPES:
        return None
    return device.get("parent") or None


def profiles_on(fleet: Fleet, host: str, users: Iterable[str], *, whole_host: bool) -> list[str]:
    """The profile names ``host`` gets for ``users``, sorted: those the users' containers list
    (declared in the fleet or not) and, for a ``whole_host``, the declared profiles that list
    ``host`` under ``hosts``."""
    used: set[str] = set()
    for user in users:
        used.update(fleet.profiles_of(user))
    if whole_host:
        used.update(name for name, p in fleet.profiles.items() if host in (p.hosts or ()))
    return sorted(used)
