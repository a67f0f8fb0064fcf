"""Veth pairs that stand in for the physical NICs that the fleet's macvlan devices name.

Does I/O (``ip link``). The kernel here has no ``dummy`` module; one end of a veth pair, up,
serves as a macvlan parent. Only interfaces the lab creates are ever deleted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.record import Veth
from lxdgpu_reconcile.lab.system import run

#: Linux interface names are at most 15 characters.
IFNAME_MAX = 15


def exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def peer_name(parent: str) -> str:
    """A short, stable name for the other end of ``parent``'s veth pair."""
    return "lxp-" + hashlib.sha1(parent.encode()).hexdigest()[:10]


def create_veth(parent: str) -> Veth | None:
    """Create ``parent`` as one end of a veth pair, both ends up.

    None when ``parent`` appeared meanwhile (made by someone else, so not the lab's to delete).
    """
    if len(parent) > IFNAME_MAX or "/" in parent or not parent:
        raise LabError(f"{parent!r} is not a usable interface name (at most {IFNAME_MAX} chars)")
    peer = peer_name(parent)
    if exists(peer):
        raise LabError(f"interface {peer} already exists; remove it or rename the NIC parent")
    try:
        run(["ip", "link", "add", parent, "type", "veth", "peer", "name", peer], what="ip link add")
    except LabError:
        if exists(parent):
            return None
        raise
    for name in (parent, peer):
        run(["ip", "link", "set", name, "up"], what=f"ip link set {name} up")
    return Veth(name=parent, peer=peer)


def delete_veth(veth: Veth) -> None:
    """Delete a pair the lab created (deleting one end removes both)."""
    if exists(veth.name):
        run(["ip", "link", "del", veth.name], what=f"ip link del {veth.name}")
