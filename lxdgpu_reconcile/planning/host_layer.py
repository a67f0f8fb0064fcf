"""The host layer of one host in its plan: accounts, homes and id delegations. Pure: no I/O.

From the fleet, the site and the host's own facts (``state.HostFacts``, read over SSH or
locally by ``observe``), ``plan_host_layer`` works out what the host's system must get for the
users in scope before their containers can run:

- an **account** per user (``AccountBody``): created locked, with no password and the nologin
  shell, with the user's uid and gid (its group is created when no group has that gid), its home
  created too when missing. An account of the user's name with another uid, or the uid held by
  another name, is an ``ACCOUNT_CONFLICT`` error naming both: never "fixed";
- the **home** (``HomeBody``, the path ``defaults.home_source`` gives on the site): created when
  missing (and not made by the account's create), owner and mode (``defaults.home_mode``) set
  when they differ; a home path that is not a directory is a ``HOME_NOT_A_DIRECTORY`` error;
- a **delegation** (``DelegationBody``) of the user's uid in /etc/subuid and gid in /etc/subgid
  to root when no line covers it: without it LXD refuses to start a container with
  ``raw.idmap``. One action per id, shared by the users who need it.

Accounts and homes of users removed from the fleet are never deleted (a note says they stay).
Delegations the tool added (its ledger on the host, ``facts.delegated``) and no user on the host
needs any more are removed only with ``--prune`` (``stale_delegations``; the host planner adds
them after the deletes of the containers that still map them). When the host layer is not
managed (``facts is None``) one note says so and nothing is planned; unreadable facts are a
``HOST_LAYER_UNREADABLE`` error for the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.fleet.host_needs import home_source
from lxdgpu_reconcile.planning import diff
from lxdgpu_reconcile.planning.common import ErrorCode, Frozen, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.planning.desired_profiles import cuda_profile_name
from lxdgpu_reconcile.planning.model import (
    AccountBody,
    ActionKind,
    Cause,
    DelegationBody,
    HomeBody,
)

#: The shell of every account the tool creates: it owns files, it never logs in.
NOLOGIN = "/usr/sbin/nologin"
#: Steps (``HostSteps.add``) of host actions; the host planner orders them first (the delete
#: of a delegation last).
ACCOUNT_STEP = "host-account"
HOME_STEP = "host-home"
DELEGATION_STEP = "host-delegation"
DELEGATION_DELETE_STEP = "host-delegation-delete"

IdFile = Literal["subuid", "subgid"]
_FILES: tuple[IdFile, ...] = ("subuid", "subgid")


class LayerUser(Frozen):
    """A fleet user in scope on the host, as the host layer needs them."""

    name: str
    uid: int
    gid: int
    #: The home's host path on the site (what the container mounts).
    home: str
    container: str


class LayerSpec(Frozen):
    """What the host layer and preflight of one host need of the fleet and the site, expanded
    with the host's desired state (``desired.DesiredHost.layer``). ``active`` is False in plans
    that leave the host layer alone (``build TEMPLATE``)."""

    active: bool = False
    users: tuple[LayerUser, ...] = ()
    #: ``defaults.home_mode`` as four octal digits.
    home_mode: str = "0750"
    #: The home of any user on the site: ``{user}`` stands for the name.
    home_pattern: str = ""
    #: Every fleet user (to tell users removed from the fleet).
    known_users: frozenset[str] = Field(default_factory=frozenset)
    #: The delegations every fleet user of the host needs (``subuid:1003``), in scope or not.
    needed: frozenset[str] = Field(default_factory=frozenset)
    #: ``hosts.NAME.gpus``; GPUs are attached on the site (False in the lab).
    gpus: int | None = None
    attach_gpus: bool = True
    #: CUDA profile name -> version.
    cuda: dict[str, str] = Field(default_factory=dict)
    #: The first profile the host's containers get that sets ``nvidia.runtime``.
    nvidia_runtime: str | None = None
    #: Every profile of the host that sets ``nvidia.runtime`` (a cluster's members are checked
    #: for the ones their containers use).
    runtime_profiles: tuple[str, ...] = ()
    #: The host is a cluster (``hosts.NAME.cluster``): the host layer is each member's
    #: (``planning.member_layer``), over ``cluster.ssh``, never ``--local`` (``local``).
    cluster: bool = False
    local: bool = False


def layer_spec(
    fleet: models.Fleet,
    site: sites.Site,
    host: str,
    users: Iterable[str],
    *,
    profiles: Iterable[str],
    known_users: frozenset[str] | None = None,
) -> LayerSpec:
    """The ``LayerSpec`` of ``host`` for ``users`` (in scope), whose containers get
    ``profiles``; ``known_users``: ``frozenset(fleet.users)``, computed once by the caller."""
    needed = set()
    for spec in fleet.users.values():
        if spec.host == host:
            needed.add(delegation_name("subuid", spec.uid))
            needed.add(delegation_name("subgid", spec.gid))
    runtimes = []
    for name in profiles:
        declared = fleet.profiles.get(name)
        if declared is not None and declared.config.get("nvidia.runtime", "").lower() == "true":
            runtimes.append(name)
    hosted = fleet.hosts.get(host)
    return LayerSpec(
        active=True,
        users=tuple(
            LayerUser(
                name=user,
                uid=fleet.users[user].uid,
                gid=fleet.users[user].gid,
                home=home_of(fleet, site, user),
                container=fleet.container_of(user),
            )
            for user in users
        ),
        home_mode=mode_text(fleet.defaults.home_mode),
        home_pattern=site.home_dir(fleet.defaults.home_source),
        known_users=known_users if known_users is not None else frozenset(fleet.users),
        needed=frozenset(needed),
        gpus=hosted.gpus if hosted is not None else None,
        attach_gpus=site.attach_gpus,
        cuda={cuda_profile_name(version): version for version in fleet.cuda},
        nvidia_runtime=runtimes[0] if runtimes else None,
        runtime_profiles=tuple(runtimes),
        cluster=hosted is not None and hosted.cluster is not None,
        local=site.local,
    )


@dataclass(frozen=True)
class HostStep:
    """One host action to add to the host's plan, and the users whose containers need it."""

    kind: ActionKind
    ref: ObjectRef
    step: str
    reason: str
    body: AccountBody | HomeBody | DelegationBody
    users: tuple[str, ...]
    cause: Cause
    changes: tuple[diff.FieldChange, ...] = ()


@dataclass
class HostLayer:
    """The host actions, errors and notes of one host."""

    steps: list[HostStep] = field(default_factory=list)
    errors: list[PlanError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def object_name(kind: ObjectKind, name: str, member: str | None) -> str:
    """The name of a host-layer object on cluster ``member``: ``tom@node2`` (an account),
    ``node2:/home/tom`` (a home), ``node2:subuid:1003`` (a delegation); ``name`` itself on a
    single server. Action ids stay unique and stable per member."""
    if member is None:
        return name
    return f"{name}@{member}" if kind is ObjectKind.ACCOUNT else f"{member}:{name}"


def delegation_name(file: str, ident: int) -> str:
    """The name of a delegation object and its ledger line: ``subuid:1003``."""
    return f"{file}:{ident}"


def parse_delegation(name: str) -> tuple[IdFile, int] | None:
    """``("subuid", 1003)`` from ``subuid:1003``; None for anything else."""
    file, _, ident = name.partition(":")
    if file not in _FILES or not ident.isdigit():
        return None
    return ("subuid" if file == "subuid" else "subgid"), int(ident)


def home_of(fleet: models.Fleet, site: sites.Site, user: str) -> str:
    """The host path of ``user``'s home on ``site`` (what the container mounts)."""
    return site.home_dir(home_source(fleet.defaults, user))


def mode_text(mode: str) -> str:
    """An octal mode as four digits: ``750`` -> ``0750``."""
    return f"{int(mode, 8):04o}"


def unmanaged_note(host: str) -> str:
    """The note of a host whose host layer is not managed."""
    return (
        f"{host}: accounts, homes and id delegations are left alone (no hosts.{host}.ssh, "
        "no --local)"
    )


def plan_host_layer(
    spec: LayerSpec,
    host: str,
    facts: state.HostFacts | None,
    *,
    removed_users: Iterable[str] = (),
) -> HostLayer:
    """The host actions of the users in ``spec`` from the host's ``facts``.

    ``removed_users``: users of tagged containers on the host; those no longer in the fleet
    get a note that their accounts and homes stay."""
    layer = HostLayer()
    if not spec.active:
        return layer
    if facts is None:
        if spec.users:
            layer.notes.append(unmanaged_note(host))
        return layer
    if facts.error is not None:
        layer.errors.append(_unreadable(host, facts))
        return layer
    delegations: dict[str, list[str]] = {}
    for user in spec.users:
        if _account(spec, host, user, facts, layer):
            _home(spec, host, user, facts, layer)
        for file, ident in (("subuid", user.uid), ("subgid", user.gid)):
            if not facts.delegates(file, ident):
                delegations.setdefault(delegation_name(file, ident), []).append(user.name)
    for name, needing in delegations.items():
        parsed = parse_delegation(name)
        assert parsed is not None
        file, ident = parsed
        which = "uid" if file == "subuid" else "gid"
        layer.steps.append(
            HostStep(
                kind=ActionKind.CREATE,
                ref=ObjectRef(kind=ObjectKind.DELEGATION, name=name),
                step=DELEGATION_STEP,
                reason=f"no line of /etc/{file} lets root map host {which} {ident} into "
                f"containers, and the container of {', '.join(needing)} maps it (raw.idmap)",
                body=DelegationBody(file=file, id=ident),
                users=tuple(needing),
                cause=Cause.ABSENT,
            )
        )
    for gone in sorted(set(removed_users) - spec.known_users):
        home = spec.home_pattern.replace("{user}", gone)
        layer.notes.append(
            f"{host}: account {gone} and {home} stay on {host}: the tool never deletes accounts "
            "or homes"
        )
    return layer


def stale_delegations(spec: LayerSpec, facts: state.HostFacts | None) -> list[tuple[IdFile, int]]:
    """The delegations the tool added on the host (its ledger) that no fleet user of the host
    needs any more, in ledger order."""
    if not spec.active or facts is None or facts.error is not None:
        return []
    stale = []
    for name in dict.fromkeys(facts.delegated):
        parsed = parse_delegation(name)
        if parsed is not None and name not in spec.needed:
            stale.append(parsed)
    return stale


def mapped_ids(instances: Mapping[str, state.InstanceObs]) -> dict[str, set[str]]:
    """Which containers map which host ids (their ``raw.idmap``): ``subuid:1003`` -> names."""
    found: dict[str, set[str]] = {}
    for name, obs in instances.items():
        idmap = obs.expanded_config.get("raw.idmap") or obs.config.get("raw.idmap", "")
        for file, ident in idmap_ids(idmap):
            found.setdefault(delegation_name(file, ident), set()).add(name)
    return found


def idmap_ids(idmap: str) -> list[tuple[IdFile, int]]:
    """The host ids a ``raw.idmap`` maps (``uid 1003 1000``, ``both 1000-1002 1000-1002``)."""
    out: list[tuple[IdFile, int]] = []
    for line in idmap.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("uid", "gid", "both"):
            continue
        first, _, last = parts[1].partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        ids = range(int(first), int(last or first) + 1)
        if len(ids) > 65536:
            continue
        files: tuple[IdFile, ...] = (
            _FILES if parts[0] == "both" else ("subuid",) if parts[0] == "uid" else ("subgid",)
        )
        out.extend((file, ident) for file in files for ident in ids)
    return out


# --- one user -------------------------------------------------------------------------------------


def _unreadable(host: str, facts: state.HostFacts) -> PlanError:
    error = facts.error
    assert error is not None
    fixes = [error.hint] if error.hint else []
    fixes.append(
        f"or leave this host's accounts, homes and delegations alone: remove hosts.{host}.ssh"
    )
    return PlanError(
        code=ErrorCode.HOST_LAYER_UNREADABLE,
        host=host,
        message=f"the accounts, homes and id delegations of {host} could not be read "
        f"({facts.via}, {error.kind.value}): {error.message}; nothing is applied there",
        fixes=tuple(fixes),
    )


def _account(
    spec: LayerSpec, host: str, user: LayerUser, facts: state.HostFacts, layer: HostLayer
) -> bool:
    """Plan ``user``'s account; False when an error keeps its home from being planned, or when
    the account's create makes the home."""
    ref = ObjectRef(kind=ObjectKind.ACCOUNT, name=user.name)
    named = facts.account(user.name)
    if named is not None:
        if named.uid == user.uid:
            return True
        layer.errors.append(
            PlanError(
                code=ErrorCode.ACCOUNT_CONFLICT,
                host=host,
                object=ref,
                message=f"account {user.name} on {host} has uid {named.uid}, and the fleet file "
                f"gives user {user.name} uid {user.uid}; lxdgpu-reconcile never changes an "
                "account's uid",
                fixes=(
                    f"if that account is this user's, give users.{user.name}.uid: {named.uid} in "
                    "the fleet file (the container then maps that uid)",
                    f"or, if it is someone else's, give user {user.name} another name in the "
                    "fleet file",
                ),
            )
        )
        return False
    holder = facts.account_with_uid(user.uid)
    if holder is not None:
        layer.errors.append(
            PlanError(
                code=ErrorCode.ACCOUNT_CONFLICT,
                host=host,
                object=ref,
                message=f"uid {user.uid} on {host} belongs to account {holder.name}, and the "
                f"fleet file gives it to user {user.name}",
                fixes=(
                    f"give user {user.name} a uid no account on {host} has (users.{user.name}.uid)",
                    f"or, if {holder.name} is {user.name}, rename the account on {host}: "
                    f"usermod -l {user.name} {holder.name}",
                ),
            )
        )
        return False
    group = next((g for g in facts.groups if g.name == user.name), None)
    if facts.group_with_gid(user.gid) is None and group is not None and group.gid != user.gid:
        layer.errors.append(
            PlanError(
                code=ErrorCode.ACCOUNT_CONFLICT,
                host=host,
                object=ref,
                message=f"group {user.name} on {host} has gid {group.gid}, no group has gid "
                f"{user.gid}, and the fleet file gives user {user.name} gid {user.gid}: the "
                "account's group cannot be created",
                fixes=(
                    f"give users.{user.name}.gid: {group.gid} in the fleet file",
                    f"or create a group with gid {user.gid} on {host} by hand",
                ),
            )
        )
        return False
    found = facts.paths.get(user.home)
    missing = found is None or not found.exists
    if found is not None and found.exists and found.kind != "directory":
        _not_a_directory(host, user, found, layer)
        return False
    layer.steps.append(
        HostStep(
            kind=ActionKind.CREATE,
            ref=ref,
            step=ACCOUNT_STEP,
            reason=f"user {user.name} has no account on {host}: it owns the home's files and "
            "never logs in",
            body=AccountBody(
                name=user.name,
                uid=user.uid,
                gid=user.gid,
                home=user.home,
                home_mode=spec.home_mode,
                shell=NOLOGIN,
                create_home=missing,
            ),
            users=(user.name,),
            cause=Cause.ABSENT,
        )
    )
    # A home the account's create makes gets its owner and mode there: nothing more to do.
    return not missing


def _home(
    spec: LayerSpec, host: str, user: LayerUser, facts: state.HostFacts, layer: HostLayer
) -> None:
    mode = spec.home_mode
    ref = ObjectRef(kind=ObjectKind.HOME, name=user.home)
    body = HomeBody(path=user.home, uid=user.uid, gid=user.gid, mode=mode)
    found = facts.paths.get(user.home)
    if found is None or not found.exists:
        layer.steps.append(
            HostStep(
                kind=ActionKind.CREATE,
                ref=ref,
                step=HOME_STEP,
                reason=f"user {user.name}'s home is not on {host}; {user.container} mounts it",
                body=body,
                users=(user.name,),
                cause=Cause.ABSENT,
            )
        )
        return
    if found.kind != "directory":
        _not_a_directory(host, user, found, layer)
        return
    changes = []
    owner = f"{user.uid}:{user.gid}"
    have_owner = f"{found.uid}:{found.gid}"
    if have_owner != owner:
        changes.append(diff.FieldChange(path=("owner",), old=have_owner, new=owner))
    have_mode = mode_text(found.mode or "0")
    if have_mode != mode:
        changes.append(diff.FieldChange(path=("mode",), old=have_mode, new=mode))
    if changes:
        layer.steps.append(
            HostStep(
                kind=ActionKind.UPDATE,
                ref=ref,
                step=HOME_STEP,
                reason=f"user {user.name}'s home is owned by {have_owner} with mode "
                f"{have_mode}; the fleet file gives {owner}, mode {mode} (defaults.home_mode)",
                body=body,
                users=(user.name,),
                cause=Cause.DRIFT,
                changes=tuple(changes),
            )
        )


def _not_a_directory(host: str, user: LayerUser, found: state.PathObs, layer: HostLayer) -> None:
    layer.errors.append(
        PlanError(
            code=ErrorCode.HOME_NOT_A_DIRECTORY,
            host=host,
            object=ObjectRef(kind=ObjectKind.HOME, name=found.path or user.home),
            message=f"{found.path or user.home} on {host}, user {user.name}'s home, is a "
            f"{found.kind or 'file'}, not a directory; {user.container} mounts it",
            fixes=(
                f"move it away on {host} (mv {user.home} {user.home}.old): the next apply "
                "creates the directory",
                "or point defaults.home_source at another place",
            ),
        )
    )
