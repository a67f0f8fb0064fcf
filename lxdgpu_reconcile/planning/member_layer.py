"""The host layer of a cluster host, member by member. Pure: no I/O.

A cluster host (``hosts.NAME.cluster``) is one fleet host whose containers live on members,
and each member has its own system: its own accounts, homes and /etc/subuid. Each member's
facts are read over its own ssh destination (``hosts.NAME.cluster.ssh.MEMBER``, into
``HostSnapshot.member_facts``). ``plan_cluster_layer`` plans a user's account, home and
delegations on the member their container is placed on (``DesiredInstance.member``: where it
is, the member the fleet names, or the placement rule's; for a move inside the cluster, the
member it moves to, so they are there before the move), as ``host_layer.plan_host_layer``
does for a single server, with the member in the object's name (``tom@node2``,
``node2:/home/tom``, ``node2:subuid:1003``) and in the body (``member``). It then runs the
preflight checks of each member's own facts (``preflight.facts_preflight``) for the containers
placed there.

- a member without an ssh destination: its host layer is left alone, one note per member with
  users (so is every member with ``--local``: this machine is at most one of them);
- a member that is not online: nothing is planned on it (its containers are out of sight, a
  create there waits), so its facts are not needed;
- a member whose facts cannot be read: ``HOST_LAYER_UNREADABLE`` for the host (a host with
  errors gets no writes) when users are placed on it; a note when none are;
- ``ledgers`` gives each member's ledger and the containers on it, for the removal of
  delegations no user of the cluster needs (``host_planner``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import host_layer as layering
from lxdgpu_reconcile.planning import preflight as preflighting
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError


def local_note(host: str) -> str:
    """The note of a cluster host planned with ``--local``."""
    return (
        f"{host}: accounts, homes and id delegations of the cluster's members are left alone "
        f"with --local (each member is reached over hosts.{host}.cluster.ssh)"
    )


def unmanaged_member_note(host: str, member: str) -> str:
    """The note of a member without an ssh destination."""
    return (
        f"{host}: accounts, homes and id delegations on member {member} are left alone (no "
        f"hosts.{host}.cluster.ssh.{member})"
    )


def members_of(want: desiring.DesiredHost) -> dict[str, str | None]:
    """User -> the member their container is placed on (None: not placed)."""
    return {instance.user: instance.member for instance in want.instances.values()}


def plan_cluster_layer(want: desiring.DesiredHost, snap: state.HostSnapshot) -> layering.HostLayer:
    """The host actions of the users in scope on cluster ``want.host``, member by member, and
    the preflight checks of each member's own facts."""
    spec = want.layer
    host = want.host
    layer = layering.HostLayer()
    if not spec.active:
        return layer
    placed = members_of(want)
    if spec.local:
        if spec.users:
            layer.notes.append(local_note(host))
        return layer
    removed = _removed_by_member(spec, snap)
    for obs in snap.members:
        member = obs.name
        users = tuple(u for u in spec.users if placed.get(u.name) == member)
        if not obs.online:
            continue
        facts = snap.member_facts.get(member)
        if facts is None:
            if users:
                layer.notes.append(unmanaged_member_note(host, member))
            continue
        if facts.error is not None:
            if users:
                layer.errors.append(_unreadable(host, member, facts))
            else:
                layer.notes.append(
                    f"{host}: the accounts and homes of member {member} could not be read "
                    f"({facts.error.message}); no user's container is on it"
                )
            continue
        where = f"member {member}"
        own = layering.plan_host_layer(spec.model_copy(update={"users": users}), where, facts)
        for step in own.steps:
            layer.steps.append(
                layering.HostStep(
                    kind=step.kind,
                    ref=ObjectRef(
                        kind=step.ref.kind,
                        name=layering.object_name(step.ref.kind, step.ref.name, member),
                    ),
                    step=step.step,
                    reason=step.reason,
                    body=step.body.model_copy(update={"member": member}),
                    users=step.users,
                    cause=step.cause,
                    changes=step.changes,
                )
            )
        layer.errors.extend(_on_member(e, host, member) for e in own.errors)
        for gone in removed.get(member, ()):
            home = spec.home_pattern.replace("{user}", gone)
            layer.notes.append(
                f"{host}: account {gone} and {home} stay on member {member}: the tool never "
                "deletes accounts or homes"
            )
        if users:
            planned = [
                step.ref.name for step in own.steps if step.ref.kind is ObjectKind.DELEGATION
            ]
            layer.errors.extend(_member_preflight(want, snap, member, facts, planned))
    return layer


def _member_preflight(
    want: desiring.DesiredHost,
    snap: state.HostSnapshot,
    member: str,
    facts: state.HostFacts,
    planned: Iterable[str],
) -> list[PlanError]:
    """``preflight.facts_preflight`` of ``member`` for the containers placed there and the
    profiles they use."""
    instances = {n: i for n, i in want.instances.items() if i.member == member}
    used = {p for i in instances.values() for p in i.profiles}
    on_member = want.model_copy(
        update={
            "instances": instances,
            "profiles": {n: p for n, p in want.profiles.items() if n in used},
            "external_profiles": tuple(p for p in want.external_profiles if p in used),
        }
    )
    runtime = next((p for p in want.layer.runtime_profiles if p in used), None)
    return preflighting.facts_preflight(
        on_member, snap, facts, planned=planned, runtime=runtime, where=f"member {member}"
    )


def _removed_by_member(spec: layering.LayerSpec, snap: state.HostSnapshot) -> dict[str, list[str]]:
    """Users no longer in the fleet whose tagged containers are on each member."""
    found: dict[str, list[str]] = {}
    for obs in snap.instances.values():
        user = obs.config.get(state.TAG_USER, "")
        if obs.managed and user and user not in spec.known_users and obs.location:
            names = found.setdefault(obs.location, [])
            if user not in names:
                names.append(user)
    return {member: sorted(names) for member, names in found.items()}


def ledgers(
    spec: layering.LayerSpec, snap: state.HostSnapshot
) -> list[tuple[str | None, state.HostFacts | None, Mapping[str, state.InstanceObs]]]:
    """Each system of the host whose ledger may list delegations to remove: ``(None, facts,
    instances)`` for a single server; for a cluster, every online member whose facts were read,
    with the containers on it."""
    if not spec.cluster:
        return [(None, snap.facts, snap.instances)]
    if spec.local:
        return []
    out: list[tuple[str | None, state.HostFacts | None, Mapping[str, state.InstanceObs]]] = []
    for obs in snap.members:
        facts = snap.member_facts.get(obs.name)
        if obs.online and facts is not None and facts.error is None:
            on = {n: i for n, i in snap.instances.items() if i.location == obs.name}
            out.append((obs.name, facts, on))
    return out


def _on_member(error: PlanError, host: str, member: str) -> PlanError:
    """``error`` of member ``member``'s system as the host's, its object named after it."""
    ref = error.object
    if ref is not None and ref.kind in _LAYER_KINDS:
        ref = ObjectRef(kind=ref.kind, name=layering.object_name(ref.kind, ref.name, member))
    return error.model_copy(update={"host": host, "object": ref})


_LAYER_KINDS = frozenset({ObjectKind.ACCOUNT, ObjectKind.HOME, ObjectKind.DELEGATION})


def _unreadable(host: str, member: str, facts: state.HostFacts) -> PlanError:
    error = facts.error
    assert error is not None
    fixes = [error.hint] if error.hint else []
    fixes.append(
        f"or leave member {member}'s accounts, homes and delegations alone: remove "
        f"hosts.{host}.cluster.ssh.{member}"
    )
    return PlanError(
        code=ErrorCode.HOST_LAYER_UNREADABLE,
        host=host,
        message=f"the accounts, homes and id delegations of member {member} of {host} could not "
        f"be read ({facts.via}, {error.kind.value}): {error.message}; nothing is applied on "
        f"{host}",
        fixes=tuple(fixes),
    )
