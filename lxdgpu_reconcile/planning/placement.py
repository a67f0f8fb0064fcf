"""Where each container of a cluster host lives: its member. Pure: no I/O.

A fleet host with ``cluster:`` is one LXD cluster (docs/clusters.md). Every user container on
it is given a member, in this order:

1. a container the cluster already has stays on the member it is on (placement is sticky: no
   container moves because another one was added), unless the user's ``member:`` names
   another member: then it moves there (a move inside the cluster, ``planning.move_steps``);
2. a new container goes to the user's ``member:`` when the fleet names one;
3. any other new container is placed by the rule, in the fleet file's order of users, on an
   online member the fleet allows (``cluster.members``, or all):

   **most free GPUs, then most free CPUs, then fewest containers, then the first name**

   where a member's free GPUs (CPUs) are its GPU (CPU) count minus what the containers already
   on it, and those placed on it before in the same plan, ask for: a user's ``gpus:`` list
   counts its length and ``gpus: all`` the member's every GPU; ``cpu:`` counts as
   ``limits.cpu`` resolves on that member (75% of 8 CPUs: 6). A container the fleet does not
   describe counts its own ``limits.cpu`` (when a number) and its ``gpu`` devices. Free
   figures may go below zero (an oversubscribed member), so the rule keeps spreading.

The plan shows each create's member and why it is there (the figures the rule compared).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.planning.common import ErrorCode, Frozen, ObjectKind, ObjectRef, PlanError

#: The placement rule in words, as plans and docs state it.
RULE = "most free GPUs, then most free CPUs, then fewest containers, then name"


class Placed(Frozen):
    """The member of one container, and why it is there."""

    member: str | None
    why: str
    #: The container is on the cluster now, on ``observed`` ("" when it is not).
    observed: str = ""


@dataclass
class _Load:
    gpus: int = 0
    cpus: int = 0
    containers: int = 0
    names: list[str] = field(default_factory=list)


def place(
    fleet: models.Fleet, host: str, snap: state.HostSnapshot, users: tuple[str, ...]
) -> dict[str, Placed]:
    """The member of every container of ``users`` (the fleet's users of cluster ``host``),
    by user name. ``snap`` is the cluster as observed (reachable)."""
    spec = fleet.hosts[host].cluster
    allowed = spec.members if spec is not None and spec.members is not None else None
    members = {m.name: m for m in snap.members}
    names = {fleet.container_of(user): user for user in users}
    where = {name: obs.location for name, obs in snap.instances.items() if obs.location}
    where.update(snap.unseen)
    load = {name: _Load() for name in members}
    for name, member in where.items():
        if member not in load:
            continue
        user = names.get(name)
        if user is None:
            obs = snap.instances.get(name)
            gpus, cpus = _observed_load(obs) if obs is not None else (0, 0)
        else:
            wanted = fleet.users[user].member or member
            if wanted != member and wanted in load:
                continue  # it moves: counted where it goes, below
            gpus, cpus = _user_load(fleet, user, members[member])
        _add(load[member], name, gpus, cpus)
    placed: dict[str, Placed] = {}
    for user in users:
        name = fleet.container_of(user)
        now = where.get(name, "")
        named = fleet.users[user].member
        if named is not None:
            if named != now and named in members:
                _add(load[named], name, *_user_load(fleet, user, members[named]))
            why = f"named by users.{user}.member" + (f" (it is on {now})" if now else "")
            placed[user] = Placed(member=named, why=why, observed=now)
        elif now:
            placed[user] = Placed(
                member=now, why=f"it is on {now} (kept where it is)", observed=now
            )
    for user in users:  # after every container the fleet or the cluster already places
        if user not in placed:
            name = fleet.container_of(user)
            placed[user] = _by_rule(fleet, user, name, members, allowed, load)
    return {user: placed[user] for user in users}


def _by_rule(
    fleet: models.Fleet,
    user: str,
    name: str,
    members: Mapping[str, state.MemberObs],
    allowed: tuple[str, ...] | None,
    load: dict[str, _Load],
) -> Placed:
    candidates = [
        m for m in members.values() if m.online and (allowed is None or m.name in allowed)
    ]
    if not candidates:
        return Placed(member=None, why="no member of the cluster is online to place it on")
    figures = {m.name: _free(m, load[m.name]) for m in candidates}

    def rank(member: state.MemberObs) -> tuple[int, int, int, str]:
        gpus, cpus, containers = figures[member.name]
        return -gpus, -cpus, containers, member.name

    best = min(candidates, key=rank)
    shown = "; ".join(
        f"{m}: {g} GPU{'s' if g != 1 else ''} and {c} CPU{'s' if c != 1 else ''} free, "
        f"{n} container{'s' if n != 1 else ''}"
        for m, (g, c, n) in sorted(figures.items())
    )
    _add(load[best.name], name, *_user_load(fleet, user, best))
    return Placed(member=best.name, why=f"placed by the rule ({RULE}): {shown}")


def _free(member: state.MemberObs, load: _Load) -> tuple[int, int, int]:
    return len(member.gpus) - load.gpus, member.cpus - load.cpus, load.containers


def _add(load: _Load, name: str, gpus: int, cpus: int) -> None:
    load.gpus += gpus
    load.cpus += cpus
    load.containers += 1
    load.names.append(name)


def _user_load(fleet: models.Fleet, user: str, member: state.MemberObs) -> tuple[int, int]:
    """What ``user``'s container asks of ``member``: GPUs, CPUs."""
    spec = fleet.users[user]
    gpus = len(member.gpus) if spec.gpus == "all" else len(spec.gpus)
    return gpus, cpu_count(fleet.cpu_of(user), member.cpus)


def cpu_count(limit: int | str, cpus: int) -> int:
    """The CPUs a fleet ``cpu:`` asks of a member with ``cpus`` CPUs (as ``limits.cpu``
    resolves there; 0 when a share meets an unknown count)."""
    if isinstance(limit, int):
        return min(limit, cpus) if cpus > 0 else limit
    if cpus <= 0:
        return 0
    return max(1, cpus * int(limit.rstrip("%")) // 100)


def _observed_load(obs: state.InstanceObs) -> tuple[int, int]:
    config = obs.expanded_config or obs.config
    limit = config.get("limits.cpu", "")
    devices = obs.expanded_devices or obs.devices
    gpus = sum(1 for dev in devices.values() if dev.get("type") == "gpu")
    return gpus, int(limit) if limit.isdigit() else 0


def cluster_placements(
    fleet: models.Fleet,
    host: str,
    snap: state.HostSnapshot | None,
    errors: list[PlanError],
) -> dict[str, Placed]:
    """The placement of every user of ``host`` when it is a cluster observed with its members
    (else none); a member the fleet names that the cluster lacks adds to ``errors``."""
    spec = fleet.hosts[host].cluster if host in fleet.hosts else None
    if spec is None or snap is None or not snap.clustered:
        return {}
    members = [m.name for m in snap.members]
    known = ", ".join(members)
    for name in spec.members or ():
        if name not in members:
            errors.append(
                PlanError(
                    code=ErrorCode.UNKNOWN_MEMBER,
                    host=host,
                    message=f"{name} is listed in hosts.{host}.cluster.members, and the cluster "
                    f"has no such member (its members: {known})",
                    fixes=(
                        f"correct hosts.{host}.cluster.members, or leave it out to use every "
                        "member",
                    ),
                )
            )
    users = tuple(name for name, user in fleet.users.items() if user.host == host)
    placed = place(fleet, host, snap, users)
    for user, where in placed.items():
        named = fleet.users[user].member
        if named is not None and named not in members:
            errors.append(
                PlanError(
                    code=ErrorCode.UNKNOWN_MEMBER,
                    host=host,
                    object=ObjectRef(kind=ObjectKind.INSTANCE, name=fleet.container_of(user)),
                    message=f"users.{user}.member is {named}, and cluster {host} has no such "
                    f"member (its members: {known})",
                    fixes=(f"name one of {known}, or leave member: out to place it by the rule",),
                )
            )
            placed[user] = where.model_copy(update={"member": None})
    return placed


def on_member(snap: state.HostSnapshot | None, member: str | None) -> state.HostSnapshot | None:
    """``snap`` with the CPU count and GPUs of ``member`` (a cluster's), for what a container
    there is expanded against (``limits.cpu`` as a share, GPU ids). A member that is not online
    has no figures: ``snap``'s own (the fewest CPUs of an online member) stand in; nothing is
    written there until it is online and planned again."""
    found = snap.member(member) if snap is not None and member is not None else None
    if found is None or snap is None or not found.online:
        return snap
    return snap.model_copy(update={"cpus": found.cpus, "gpus": found.gpus})
