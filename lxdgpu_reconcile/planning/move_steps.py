"""Moves between hosts and renames: a user's container that is elsewhere than the fleet says.
Pure: no I/O.

When a user's ``host:`` or ``container:`` changed while their container exists under the old
host or name, the plan moves it (``ActionKind.MOVE``, on the target host) or renames it
(``ActionKind.RENAME``, on the same host) instead of creating a fresh container and deleting the
old one: the user's root filesystem goes along. ``find_moves`` looks at every host of the
snapshot for the container to move (the *source*); ``plan_move`` adds the one action that does
it, performed by ``execute.moves``.

A move that was interrupted is finished, never redone: the source is tagged
``user.lxdgpu.moved-to: HOST/NAME`` when the move stops it, before the copy, and
``user.lxdgpu.moved-at`` once the target runs. So a source tagged ``moved-to`` whose target
exists means "the copy is made": the move goes on from there. An interrupted rename is a
container under the new name that still carries ``moved-to`` pointing at itself, its
``created-as`` naming the old name. A finished move leaves the source stopped; only ``--prune``
deletes it (``instance_steps``), lifting the protection the tool gave it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning.common import ErrorCode, Frozen, ObjectKind, ObjectRef, PowerState
from lxdgpu_reconcile.planning.model import (
    ActionKind,
    Cause,
    Hold,
    MoveInstanceBody,
)
from lxdgpu_reconcile.templates import recipe

if TYPE_CHECKING:  # the container steps call this module: imported for the types only
    from lxdgpu_reconcile.planning.instance_steps import InstanceSteps


class MoveSource(Frozen):
    """The container a desired container moves from: ``host``/``name``, as observed (``obs``;
    for an interrupted rename, the renamed container itself)."""

    host: str
    name: str
    obs: state.InstanceObs
    #: The source host is paused in the fleet file: the move is held.
    paused: bool = False


class MovePlan(Frozen):
    """Every move of a plan: by target ``HOST/NAME``, its source; and the sources taken."""

    to: dict[str, MoveSource] = Field(default_factory=dict)
    #: ``HOST/NAME`` of every source a move takes: never planned for deletion meanwhile.
    away: tuple[str, ...] = ()
    #: Hosts that could not be read: a user's container may be there, out of sight.
    unseen: tuple[str, ...] = ()
    #: Cluster hosts with a member that is not online -> the containers there, out of sight.
    unseen_names: dict[str, tuple[str, ...]] = Field(default_factory=dict)


def key(host: str, name: str) -> str:
    return f"{host}/{name}"


def moved(obs: state.InstanceObs) -> bool:
    """Whether ``obs`` is the source of a finished move (tagged ``moved-to`` and ``moved-at``)."""
    return state.TAG_MOVED_TO in obs.config and state.TAG_MOVED_AT in obs.config


def find_moves(desired: desiring.DesiredState, snapshot: state.FleetSnapshot) -> MovePlan:
    """The moves and renames that bring every desired container from where it is now."""
    to: dict[str, MoveSource] = {}
    # The observed containers by user tag, in host then container order: each container's
    # candidates are its user's, not every container of the fleet (quadratic in the users).
    tagged: dict[str, list[tuple[str, state.InstanceObs]]] = {}
    for where, seen in snapshot.hosts.items():
        if seen.reachable:
            for obs in seen.instances.values():
                tagged.setdefault(obs.config.get(state.TAG_USER, ""), []).append((where, obs))
    for host, want in desired.hosts.items():
        snap = snapshot.hosts.get(host)
        if snap is None or not snap.reachable:
            continue
        for name, inst in want.instances.items():
            candidates = tagged.get(inst.user, [])
            found = _source(desired, snapshot, host, inst, snap.instances.get(name), candidates)
            if found is not None:
                to[key(host, name)] = found
    away = tuple(key(s.host, s.name) for s in to.values())
    unseen = {h for h, seen in snapshot.hosts.items() if not seen.reachable}
    unseen.update(h for h in desired.hosts if h not in snapshot.hosts)
    names = {h: tuple(sorted(seen.unseen)) for h, seen in snapshot.hosts.items() if seen.unseen}
    return MovePlan(to=to, away=away, unseen=tuple(sorted(unseen)), unseen_names=names)


def _source(
    desired: desiring.DesiredState,
    snapshot: state.FleetSnapshot,
    host: str,
    want: desiring.DesiredInstance,
    target: state.InstanceObs | None,
    candidates: Iterable[tuple[str, state.InstanceObs]],
) -> MoveSource | None:
    """Where ``want`` moves from; ``candidates``: the reachable hosts' containers tagged with
    its user, with their hosts."""
    here = key(host, want.name)
    if target is not None and _own(target, want.user) and _moving_to(target) == here:
        made = target.config.get(state.TAG_CREATED_AS, "")
        old_host, _, old = made.partition("/")
        gone = old not in snapshot.hosts[host].instances
        if old_host == host and old and old != want.name and gone:
            return MoveSource(host=host, name=old, obs=target)  # an interrupted rename
    found = []
    for name, obs in candidates:
        wanted_there = desired.hosts[name].instances if name in desired.hosts else {}
        if key(name, obs.name) == here or obs.name in wanted_there:
            continue
        if not _own(obs, want.user) or moved(obs):
            continue
        if obs.config.get(state.TAG_CREATED_AS, key(name, obs.name)) != key(name, obs.name):
            continue  # a copy (lxc copy copies the tags): never moved
        if _moving_to(obs) not in (None, here):
            continue
        paused = name in desired.hosts and desired.hosts[name].paused
        found.append(MoveSource(host=name, name=obs.name, obs=obs, paused=paused))
    if len(found) != 1:
        return None
    source = found[0]
    if target is None or _moving_to(source.obs) == here:
        return source
    return None


def _own(obs: state.InstanceObs, user: str) -> bool:
    return (
        obs.type == "container"
        and obs.managed
        and obs.config.get(state.TAG_USER) == user
        and not recipe.is_build_container(obs.config)
    )


def _moving_to(obs: state.InstanceObs) -> str | None:
    return obs.config.get(state.TAG_MOVED_TO)


def plan_move(
    planner: InstanceSteps,
    want: desiring.DesiredInstance,
    source: MoveSource,
    target: state.InstanceObs | None,
) -> None:
    """Add the move (or rename) of ``source`` to ``want`` on the planner's host; ``target`` is
    the container already under the new name (an interrupted move), if any."""
    host = planner.host
    ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
    renaming = source.host == host
    src = source.obs
    where = f"{source.host}:{source.name}"
    if target is not None and not renaming and src.running:
        state_now = "runs too" if target.running else "is stopped"
        planner._error(
            ErrorCode.MOVE_CONFLICT,
            ref,
            f"{where} was copied to {host}:{want.name} by an interrupted move, and runs again "
            f"while the copy {state_now}: which one holds {want.user}'s work is for you to decide",
            f"to keep the copy: `lxc stop {where}`, then plan again (the move finishes)",
            f"to copy again: `lxc stop {where}` and `lxc delete {host}:{want.name}` (the copy), "
            "then plan again",
        )
        return
    wanted = diff.essence(
        config=want.config, devices=want.devices, profiles=want.profiles, preserve=planner.preserve
    )
    have = diff.instance_essence(target or src, planner.preserve)
    # Finishing an interrupted move stops nothing: the source is stopped, the copy is started.
    outage = src.running and target is None
    pending, hold = None, None
    verb = "renaming" if renaming else "moving"
    # On a cluster: a rename that also changes the member, or a move in from another host,
    # goes to the member the fleet gives it.
    member = want.member if planner.snap.clustered else None
    changes_member = member is not None and (not renaming or src.location != member)
    down = member_down(planner.snap, member)
    if source.paused:
        pending, hold = f"paused in the fleet file (hosts.{source.host}.paused: true)", Hold.PAUSED
    elif down:
        pending, hold = down, Hold.UNSEEN_HOSTS
    elif outage and not planner.options.allow_restart:
        pending = (
            f"{verb} stops {where}: apply with --allow-restart (or let reconcile do it inside "
            "its restart window)"
        )
        hold = Hold.RESTART
    body = MoveInstanceBody(
        user=want.user,
        source_host=source.host,
        source_name=source.name,
        source_observed=fingerprints.instance(src, None),
        name=want.name,
        profiles=want.profiles,
        config=want.config,
        devices=want.devices,
        preserve=planner.preserve,
        start=want.state is PowerState.RUNNING,
        member=member if changes_member else None,
    )
    if renaming:
        reason = f"user {want.user}'s container name changed: {source.name} -> {want.name}"
    else:
        reason = f"user {want.user}'s host changed: {source.host} -> {host}"
    if changes_member:
        reason += f"; to member {member}: {want.placement}"
    if target is not None or state.TAG_MOVED_TO in src.config:
        reason += " (finishes an interrupted move)"
    planner.add(
        ActionKind.RENAME if renaming and not changes_member else ActionKind.MOVE,
        ref,
        "move",
        reason=reason,
        changes=diff.diff(wanted, have),
        restart=outage,
        pending=pending,
        depends_on=planner._profile_deps(want.profiles),
        body=body,
        observed=fingerprints.instance(target, planner.preserve) if target is not None else None,
        cause=Cause.MOVED,
        hold=hold,
    )
    if not renaming:
        home = want.devices.get(desiring.HOME_DEVICE, {}).get("source", "")
        planner.notes.append(
            f"{host}: {want.name} moves from {source.host}: the home directory does not move "
            f"(its data stays on {source.host}'s disk); {home} must exist on {host}"
        )


def member_down(snap: state.HostSnapshot, member: str | None) -> str | None:
    """Why nothing can be written on cluster ``member`` of ``snap`` now (it is not online), or
    None."""
    found = snap.member(member) if member is not None else None
    if found is None or found.online:
        return None
    return (
        f"member {member} of {snap.host} is {found.status.lower() or 'not online'}: waits until "
        "it is online again"
    )


def plan_member_move(
    planner: InstanceSteps, want: desiring.DesiredInstance, obs: state.InstanceObs
) -> None:
    """Move ``obs`` to the member the fleet names (``users.U.member``) inside its cluster:
    stopped, LXD's move with a target, rewritten, started (``execute.cluster_moves``). The
    same rules as a move between hosts: an outage (``--allow-restart``), the GPU-busy guard;
    there is only ever one copy, so two can never run."""
    host = planner.host
    ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
    member = want.member
    assert member is not None
    arrived = obs.location == member
    outage = obs.running and not arrived
    pending, hold = None, None
    down = member_down(planner.snap, member)
    if down:
        pending, hold = down, Hold.UNSEEN_HOSTS
    elif outage and not planner.options.allow_restart:
        pending = (
            f"moving {want.name} to member {member} stops it: apply with --allow-restart (or let "
            "reconcile do it inside its restart window)"
        )
        hold = Hold.RESTART
    wanted = diff.essence(
        config=want.config, devices=want.devices, profiles=want.profiles, preserve=planner.preserve
    )
    body = MoveInstanceBody(
        user=want.user,
        source_host=host,
        source_name=want.name,
        source_observed=fingerprints.instance(obs, None),
        name=want.name,
        profiles=want.profiles,
        config=want.config,
        devices=want.devices,
        preserve=planner.preserve,
        start=want.state is PowerState.RUNNING,
        member=member,
    )
    reason = f"user {want.user}'s member changed: {obs.location or '?'} -> {member}"
    if arrived or state.TAG_MOVED_TO in obs.config:
        reason += " (finishes an interrupted move)"
    planner.add(
        ActionKind.MOVE,
        ref,
        "move",
        reason=reason,
        changes=diff.diff(wanted, diff.instance_essence(obs, planner.preserve)),
        restart=outage,
        pending=pending,
        depends_on=planner._profile_deps(want.profiles),
        body=body,
        cause=Cause.MOVED,
        hold=hold,
    )
    home = want.devices.get(desiring.HOME_DEVICE, {}).get("source", "")
    planner.notes.append(
        f"{host}: {want.name} moves from member {obs.location or '?'} to {member}: the home "
        f"directory does not move; {home} must exist on {member}"
    )


def wants_member_move(
    snap: state.HostSnapshot, want: desiring.DesiredInstance, obs: state.InstanceObs
) -> bool:
    """Whether ``obs`` must move to another member of its cluster (or finish such a move)."""
    if not snap.clustered or want.member is None or not obs.location:
        return False
    here = key(snap.host, want.name)
    return obs.location != want.member or (
        obs.managed and _moving_to(obs) == here and not _renamed(obs, here)
    )


def _renamed(obs: state.InstanceObs, here: str) -> bool:
    return obs.config.get(state.TAG_CREATED_AS, here) != here
