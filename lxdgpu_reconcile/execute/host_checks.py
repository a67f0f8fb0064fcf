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
from lxdgpu_reconcile.planning.host_layer import NOLOGIN
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


def home_on_site(fleet: Fleet, user: str, authority: Authority) -> str:
    """``user``'s home as the host sees it on the site (``Site.home_dir``)."""
    path = home_source(fleet.defaults, user)
    return Site(host_root=authority.host_root, own_homes=authority.own_homes).home_dir(path)


def _account(
    action: plans.Action, body: plans.AccountBody, fleet: Fleet, authority: Authority
) -> None:
    if not _USER_NAME.match(body.name) or action.object.name != body.name:
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
    owners = [
        user
        for user, spec in fleet.users.items()
        if spec.host == action.host and home_on_site(fleet, user, authority) == path
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
    if action.object.name != f"{body.file}:{body.id}":
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
