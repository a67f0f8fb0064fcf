"""What no plan can make the executor do on a host's own system (the host layer). Pure.

A saved plan is a file that can be edited, so before any command runs, a host action is checked
against the fleet file and this run's ``Authority`` (as ``execute.invariants`` does for LXD
writes), never against what the plan says of itself:

- an account only for a fleet user whose container lives on that host, with exactly the fleet's
  uid and gid (both at least 1000: never a system account), that user's home, the nologin shell
  and an octal mode; its name matches the fleet's user-name pattern;
- a home only at the path the fleet's ``defaults.home_source`` gives a fleet user of that host
  (on the site: below the lab's root in the lab), owned by exactly that user's uid and gid: a
  plan edited to chown ``/etc`` or to give ``/home/alice`` to another uid is refused. The path
  must be absolute, without ``..`` and not one of the host's system trees (``fleet.safety``);
- on a cluster host (``hosts.X.cluster``), an action names a member that has an ssh
  destination (``cluster.ssh``; among ``cluster.members`` when they are listed) and its object
  is named after it (``tom@node2``, ``node2:/home/tom``, ``node2:subuid:1003``); an account,
  home or added delegation only for a user the fleet does not put on another member
  (``users.NAME.member``); on a single server, no member;
- a delegation only of an id of at least 1000; added only for the uid (subuid) or gid (subgid)
  of a fleet user of that host; removed only with ``--prune`` given to this run (or
  ``reconcile.allow_deletes``), never while a fleet user of the host still needs it, and only
  when the tool's ledger on the host lists it (``execute.host_actions`` checks that on the host).

A refusal raises ``invariants.NotAllowed``: nothing is run, the action fails with what was
refused, and what depends on it is skipped.
"""

from __future__ import annotations

import re

from lxdgpu_reconcile.execute.invariants import Authority, NotAllowed
from lxdgpu_reconcile.fleet import safety
from lxdgpu_reconcile.fleet.host_needs import home_source
from lxdgpu_reconcile.fleet.models import Fleet, User
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.host_layer import NOLOGIN, object_name
from lxdgpu_reconcile.site import Site

_REPLAN = (
    "plan again from the fleet file (`lxdgpu-reconcile plan`), review the plan, then apply it; "
    "a plan file edited by hand is never applied"
)
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_MODE = re.compile(r"^0?[0-7]{3}$")
#: The lowest id of a real account; ids below are the system's.
FIRST_ID = 1000
LAST_ID = 4294967294


def check(action: plans.Action, fleet: Fleet, authority: Authority) -> None:
    """Refuse ``action`` (on an account, home or delegation) when no fleet file could have
    planned it; raises ``NotAllowed``."""
    body = action.body
    _member(action, fleet)
    if isinstance(body, plans.AccountBody) and action.kind is plans.ActionKind.CREATE:
        _account(action, body, fleet, authority)
    elif isinstance(body, plans.HomeBody) and action.kind in (
        plans.ActionKind.CREATE,
        plans.ActionKind.UPDATE,
    ):
        _home(action, body.path, body.uid, body.gid, body.mode, fleet, authority)
    elif isinstance(body, plans.DelegationBody) and action.kind in (
        plans.ActionKind.CREATE,
        plans.ActionKind.DELETE,
    ):
        _delegation(action, body, fleet, authority)
    else:
        raise _refused(action, "the plan has no usable body for this host action")


def member_of(action: plans.Action) -> str | None:
    """The cluster member a host action is on (its body's ``member``); None for a single
    server's, and for any other action."""
    body = action.body
    if isinstance(body, plans.AccountBody | plans.HomeBody | plans.DelegationBody):
        return body.member
    return None


def ssh_key(action: plans.Action) -> str:
    """The fleet key that gives the shell of ``action``'s system: ``hosts.h1.ssh``, or
    ``hosts.dept.cluster.ssh.node2`` on a cluster member."""
    member = member_of(action)
    if member is None:
        return f"hosts.{action.host}.ssh"
    return f"hosts.{action.host}.cluster.ssh.{member}"


def _member(action: plans.Action, fleet: Fleet) -> None:
    """A host action on a cluster host names one of its members that has an ssh destination
    (``hosts.X.cluster.ssh``, and among ``cluster.members`` when they are listed), and is named
    after it; one on a single server names no member. Whose container is on that member is
    the plan's to say (placement); the user, ids and paths are checked as on a single server."""
    member = member_of(action)
    spec = fleet.hosts.get(action.host)
    cluster = spec.cluster if spec is not None else None
    if cluster is None:
        if member is not None:
            raise _refused(
                action, f"{action.host} is not a cluster, and the plan names member {member}"
            )
        return
    if member is None:
        raise _refused(
            action,
            f"{action.host} is a cluster, and the plan names no member: each member's own system "
            "is its own",
        )
    if member not in cluster.ssh or (cluster.members is not None and member not in cluster.members):
        raise _refused(
            action,
            f"member {member} of {action.host} has no ssh destination in the fleet file "
            f"(hosts.{action.host}.cluster.ssh)",
        )
    bare = action.object.name
    if isinstance(action.body, plans.AccountBody):
        bare = action.body.name
    elif isinstance(action.body, plans.HomeBody):
        bare = action.body.path
    elif isinstance(action.body, plans.DelegationBody):
        bare = f"{action.body.file}:{action.body.id}"
    if action.object.name != object_name(action.object.kind, bare, member):
        raise _refused(
            action, f"the object is named {action.object.name}, not after member {member}"
        )
    body = action.body
    if isinstance(body, plans.DelegationBody) and action.kind is not plans.ActionKind.CREATE:
        return  # a removal: checked against every user of the cluster (``_delegation``)
    elsewhere = [
        name
        for name, user in fleet.users.items()
        if user.host == action.host and user.member is not None and user.member != member
    ]
    if isinstance(body, plans.AccountBody) and body.name in elsewhere:
        raise _refused(
            action,
            f"the fleet file puts user {body.name} on member {fleet.users[body.name].member}",
        )
    if isinstance(body, plans.DelegationBody):
        ids = {
            (u.uid if body.file == "subuid" else u.gid)
            for name, u in fleet.users.items()
            if u.host == action.host and name not in elsewhere
        }
        if body.id not in ids:
            raise _refused(
                action, f"no fleet user of {action.host} that may be on member {member} has it"
            )


def home_on_site(fleet: Fleet, user: str, authority: Authority) -> str:
    """``user``'s home as the host sees it on the site (``Site.home_dir``)."""
    path = home_source(fleet.defaults, user)
    return Site(host_root=authority.host_root, own_homes=authority.own_homes).home_dir(path)


def _account(
    action: plans.Action, body: plans.AccountBody, fleet: Fleet, authority: Authority
) -> None:
    named = object_name(action.object.kind, body.name, body.member)
    if not _USER_NAME.match(body.name) or action.object.name != named:
        raise _refused(action, f"{body.name!r} is not a user name the fleet file can hold")
    spec = _fleet_user(action, body.name, fleet)
    if (body.uid, body.gid) != (spec.uid, spec.gid):
        raise _refused(
            action,
            f"the plan creates account {body.name} with uid {body.uid} and gid {body.gid}; the "
            f"fleet file gives it uid {spec.uid} and gid {spec.gid}",
        )
    if body.shell != NOLOGIN:
        raise _refused(action, f"the plan gives account {body.name} the shell {body.shell!r}")
    _home(action, body.home, body.uid, body.gid, body.home_mode, fleet, authority)


def _home(
    action: plans.Action,
    path: str,
    uid: int,
    gid: int,
    mode: str,
    fleet: Fleet,
    authority: Authority,
) -> None:
    _ids(action, uid, gid)
    if not _MODE.match(mode):
        raise _refused(action, f"mode {mode!r} is not an octal mode such as 0750")
    problems = list(safety.host_path_rules(path))
    if path.rstrip("/") in ("", authority.host_root.rstrip("/")):
        problems.append(f"{path!r} is the root of the host")
    if problems:
        raise _refused(action, f"home {path}: {'; '.join(problems)}")
    member = member_of(action)
    owners = [
        user
        for user, spec in fleet.users.items()
        if spec.host == action.host
        and (member is None or spec.member in (None, member))
        and home_on_site(fleet, user, authority) == path
    ]
    if not owners:
        raise _refused(
            action,
            f"{path} is not the home defaults.home_source gives any user of {action.host}",
        )
    if not any((fleet.users[u].uid, fleet.users[u].gid) == (uid, gid) for u in owners):
        raise _refused(
            action,
            f"the plan gives {path} to {uid}:{gid}; the fleet file gives it to "
            + ", ".join(f"{u} ({fleet.users[u].uid}:{fleet.users[u].gid})" for u in owners),
        )


def _delegation(
    action: plans.Action, body: plans.DelegationBody, fleet: Fleet, authority: Authority
) -> None:
    _ids(action, body.id)
    if action.object.name != object_name(action.object.kind, f"{body.file}:{body.id}", body.member):
        raise _refused(action, f"the delegation is named {action.object.name}")
    users = [spec for spec in fleet.users.values() if spec.host == action.host]
    ids = {spec.uid if body.file == "subuid" else spec.gid for spec in users}
    if action.kind is plans.ActionKind.CREATE:
        if body.id not in ids:
            which = "uid" if body.file == "subuid" else "gid"
            raise _refused(
                action,
                f"no fleet user of {action.host} has {which} {body.id}; only those ids are "
                "delegated to root",
            )
        return
    if not authority.prune:
        raise NotAllowed(
            f"{action.object} on {action.host}: the plan removes it, but this run was not given "
            "--prune (nor reconcile.allow_deletes); nothing was changed",
            hint="deletes need --prune given to apply: `lxdgpu-reconcile plan --prune`, review, "
            "then `lxdgpu-reconcile apply --prune`",
        )
    if body.id in ids:
        raise _refused(action, f"a fleet user of {action.host} still needs it")


def _fleet_user(action: plans.Action, name: str, fleet: Fleet) -> User:
    spec = fleet.users.get(name)
    if spec is None or spec.host != action.host:
        raise _refused(action, f"the fleet file has no user {name} on {action.host}")
    return spec


def _ids(action: plans.Action, *ids: int) -> None:
    for ident in ids:
        if not FIRST_ID <= ident <= LAST_ID:
            raise _refused(
                action, f"id {ident} is not a real user's (ids from {FIRST_ID} to {LAST_ID})"
            )


def _refused(action: plans.Action, why: str) -> NotAllowed:
    return NotAllowed(f"{action.object} on {action.host}: {why}; nothing was changed", hint=_REPLAN)
