"""The members of a cluster host: read through ``LxdApi`` (I/O), and their snapshot (pure).

A fleet host with ``cluster:`` is one LXD cluster, observed through one endpoint like any host
(``observe.reading``). On top of a single host's requests it reads the member list
(``GET /1.0/cluster/members?recursion=1``: name, status, url) and, for every member that is
online, that member's resources (``GET /1.0/resources?target=MEMBER``: CPUs, GPUs, memory;
a member whose resources cannot be read is taken as not answering, ``NOT_ANSWERING``); the
host-wide ``GET /1.0/resources`` is not read (it describes only the member that answers). A
cluster of N members, M of them online, costs the five requests of a single host minus one, plus
1 + M.

Instances on a member that is not online are not observed: they go to ``HostSnapshot.unseen``
(name -> member), and the planner plans nothing on them. LXD 5.0 lists them with status
``Error`` (status code 112), their name and location, and ``null`` config, devices and
profiles (type ""). It lists them so as soon as their member stops answering, while the member
list still says ``Online`` until the member misses heartbeats for ``cluster.offline_threshold``
seconds (20 by default; the lab sets 11): such an instance is unseen too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.observe.lxderrors import LxdError
from lxdgpu_reconcile.state import GpuObs, InstanceObs, MemberObs

Json = Mapping[str, Any]
#: The status of a member that answers (``lxc cluster list``: ONLINE).
ONLINE = "Online"
#: The tool's status of a member listed ``Online`` whose own resources could not be read: it
#: stopped answering and its heartbeats are not overdue yet (LXD 5.0.2 then answers a request
#: for it after about 10 s with ``Missing event connection with target cluster member``).
NOT_ANSWERING = "Not answering"


class NotACluster(ValueError):
    """The fleet says the host is a cluster; the server says it is not."""


def read_members(
    client: LxdApi, *, remaining: Callable[[], float]
) -> tuple[list[Json], dict[str, Json]]:
    """The member list and the resources of each online member, as LXD returned them."""
    if not (client.host_info.get("environment") or {}).get("server_clustered", False):
        raise NotACluster("the server is not clustered")
    listed: list[Json] = list(client.list("cluster/members", recursion=1, timeout=remaining()))
    members: list[Json] = []
    resources: dict[str, Json] = {}
    for member in listed:
        name = str(member["server_name"])
        if member.get("status") == ONLINE:
            try:
                resources[name] = client.resources(timeout=remaining(), target=name)
            except LxdError as exc:
                member = {**member, "status": NOT_ANSWERING, "message": exc.message}
        members.append(member)
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
        if inst.location in down or (inst.location and unreachable(inst)):
            unseen[inst.name] = inst.location
        else:
            seen.append(inst)
    return seen, unseen


def unreachable(inst: InstanceObs) -> bool:
    """Whether LXD listed ``inst`` without reaching its member: status ``Error`` and nothing
    but its name and location (an instance that failed on a member that answers keeps its
    config, at least its ``volatile.*`` keys, and its profiles)."""
    return inst.status == "Error" and not inst.config and not inst.profiles and not inst.devices


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
