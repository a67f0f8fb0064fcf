"""The members of a cluster host: read through ``LxdApi`` (I/O), and their snapshot (pure).

A fleet host with ``cluster:`` is one LXD cluster, observed through one endpoint like any host
(``observe.reading``). On top of a single host's requests it reads the member list
(``GET /1.0/cluster/members?recursion=1``: name, status, url) and, for every member that is
online, that member's resources (``GET /1.0/resources?target=MEMBER``: CPUs, GPUs, memory); the
host-wide ``GET /1.0/resources`` is not read (it describes only the member that answers). A
cluster of N members, M of them online, costs the five requests of a single host minus one, plus
1 + M.

Instances on a member that is not online (LXD lists them without their config, status
``Error``) are not observed: they go to ``HostSnapshot.unseen`` (name -> member), and the
planner plans nothing on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.state import GpuObs, InstanceObs, MemberObs

Json = Mapping[str, Any]
#: The status of a member that answers (``lxc cluster list``: ONLINE).
ONLINE = "Online"


class NotACluster(ValueError):
    """The fleet says the host is a cluster; the server says it is not."""


def read_members(
    client: LxdApi, *, remaining: Callable[[], float]
) -> tuple[list[Json], dict[str, Json]]:
    """The member list and the resources of each online member, as LXD returned them."""
    if not (client.host_info.get("environment") or {}).get("server_clustered", False):
        raise NotACluster("the server is not clustered")
    members: list[Json] = list(client.list("cluster/members", recursion=1, timeout=remaining()))
    resources: dict[str, Json] = {
        str(m["server_name"]): client.resources(timeout=remaining(), target=str(m["server_name"]))
        for m in members
        if m.get("status") == ONLINE
    }
    return members, resources


def parse_members(
    members: Sequence[Json],
    resources: Mapping[str, Json],
    parse_gpus: Callable[[Json], tuple[GpuObs, ...]],
    parse_memory: Callable[[Json], dict[str, int]],
) -> tuple[MemberObs, ...]:
    """``MemberObs`` of each member, by name; resources for those that have them."""
    found = []
    for item in members:
        name = str(item["server_name"])
        res = resources.get(name) or {}
        memory = parse_memory(res)
        found.append(
            MemberObs(
                name=name,
                status=str(item.get("status") or ""),
                url=str(item.get("url") or ""),
                message=str(item.get("message") or ""),
                cpus=int((res.get("cpu") or {}).get("total", 0)),
                gpus=parse_gpus(res),
                memory_total=memory.get("total"),
                memory_used=memory.get("used"),
            )
        )
    return tuple(sorted(found, key=lambda m: m.name))


def split_unseen(
    instances: Iterable[InstanceObs], members: Sequence[MemberObs]
) -> tuple[list[InstanceObs], dict[str, str]]:
    """The instances of members that are online (or of no known member), and the names of
    the others with their member."""
    down = {m.name for m in members if not m.online}
    seen: list[InstanceObs] = []
    unseen: dict[str, str] = {}
    for inst in instances:
        if inst.location in down:
            unseen[inst.name] = inst.location
        else:
            seen.append(inst)
    return seen, unseen


def host_figures(members: Sequence[MemberObs]) -> dict[str, Any]:
    """The host-wide figures of a cluster: the fewest CPUs of an online member (what a share
    of "the host's CPUs" means where no member is known), memory summed over online members."""
    online = [m for m in members if m.online]
    totals = [m.memory_total for m in online if m.memory_total is not None]
    used = [m.memory_used for m in online if m.memory_used is not None]
    return {
        "cpus": min((m.cpus for m in online), default=0),
        "memory_total": sum(totals) if totals else None,
        "memory_used": sum(used) if used else None,
    }
