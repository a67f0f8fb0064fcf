"""The executor's invariants: what no plan can make it write, whatever the plan says. Pure.

A plan is data, and a saved plan is a file that can be edited. So the executor checks every
write against what the apply call itself was given (``Authority``: ``--adopt`` and ``--prune``
given to this run, or reconcile's ``allow_deletes``), never against the ``adopt`` flag of an
action or the options recorded in a plan, and against the safety rules ``validate`` applies to
the fleet file (``fleet.safety``):

- no write to, start or stop of an untagged object unless this run adopts it: ``--adopt`` for
  all, or naming the container, its user or the profile; LXD's ``default`` profile when the
  fleet file declares it (the planner takes it over then, without ``--adopt``);
- no delete of an untagged object, ever; no delete without ``--prune`` given to this run (or
  ``reconcile.allow_deletes``), except of a build container of this tool
  (``user.lxdgpu.role: build``, read from the live object) or of one of its containers whose
  create never finished (``planning.unfinished``, also read live): neither holds user data;
- no body with a key or device ``validate`` refuses: ``security.privileged`` and the ``raw.*``
  keys unless the fleet's profile of that name has ``allow_unsafe``; a disk whose host source
  is relative, has ``..`` or exposes the host's own files (on a lab site, below the lab's root);
  no container given a profile the fleet file does not know; a moved container's ``raw.idmap``
  only the one the fleet file gives its user;
- no move (``execute.moves``) but of the fleet's user's own tagged container, to the host and
  name the fleet file gives that user now; the source it leaves is deleted only with ``--prune``.

A refusal raises ``NotAllowed`` (an ``LxdError``): the action fails with what was refused and
what to do, nothing is written, and the actions that depend on it are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import safety
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.lxderrors import LxdError
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import unfinished as unfinishing
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.planning.desired import DEFAULT_PROFILE, cuda_profile_name, raw_idmap
from lxdgpu_reconcile.templates import recipe

_REPLAN = (
    "plan again from the fleet file (`lxdgpu-reconcile plan`), review the plan, then apply it; "
    "a plan file edited by hand is never applied"
)


@dataclass(frozen=True)
class Authority:
    """What this run of the executor may do beyond changing tagged objects, as given to the run
    itself (never read from the plan it performs).

    ``adopt``: True (every untagged object in the fleet's way), False, or the names given with
    ``--adopt`` (containers, users, profiles). ``prune``: ``--prune`` given, or reconcile's
    ``allow_deletes``. ``host_root``: the site's root for host paths (the lab's; "" on real
    hosts): disk sources below it are checked as the fleet file names them.
    """

    adopt: bool | tuple[str, ...] = False
    prune: bool = False
    host_root: str = ""
    #: The site's hosts have homes of their own (``Site.own_homes``: the lab).
    own_homes: bool = False
    #: Containers named with ``--force``: stopped even when their GPUs are busy.
    force: tuple[str, ...] = ()


#: The one key of a container's own config that maps host ids into it: only the fleet's mapping.
IDMAP = "raw.idmap"


class NotAllowed(LxdError):
    """An action the plan asks for and the executor refuses whatever the plan says; nothing was
    written."""


def adopts(authority: Authority, fleet: Fleet, host: str, ref: ObjectRef) -> bool:
    """Whether this run may write the untagged object ``ref`` on ``host``."""
    if (
        ref.kind is ObjectKind.PROFILE
        and ref.name == DEFAULT_PROFILE
        and ref.name in fleet.profiles
    ):
        return True
    if authority.adopt is True:
        return True
    if authority.adopt is False:
        return False
    names = set(authority.adopt)
    if ref.name in names:
        return ref.kind in (ObjectKind.INSTANCE, ObjectKind.PROFILE)
    if ref.kind is not ObjectKind.INSTANCE:
        return False
    return any(
        user in names and spec.host == host and fleet.container_of(user) == ref.name
        for user, spec in fleet.users.items()
    )


def check_live(
    action: plans.Action, current: Mapping[str, Any], fleet: Fleet, authority: Authority
) -> None:
    """Refuse ``action`` (an update, delete, start or stop) on the object as it is now
    (``current``, LXD's JSON of it); raises ``NotAllowed``."""
    config = current.get("config") or {}
    tagged = config.get(state.TAG_MANAGED) == "true"
    where = f"{action.object} on {action.host}"
    if action.kind is plans.ActionKind.DELETE:
        if not tagged:
            raise NotAllowed(
                f"{where} is not tagged {state.TAG_MANAGED}: lxdgpu-reconcile never deletes it, "
                "whatever a plan says; nothing was deleted",
                hint="delete it by hand if it must go; " + _REPLAN,
            )
        leftover = recipe.is_build_container(config)
        # A container whose create never finished has held no user data (planning.unfinished).
        unfinished = unfinishing.is_unfinished(str(current.get("status", "")), config)
        if not authority.prune and not leftover and not unfinished:
            raise NotAllowed(
                f"{where}: the plan deletes it, but this run was not given --prune (nor "
                "reconcile.allow_deletes); nothing was deleted",
                hint="deletes need --prune given to apply: `lxdgpu-reconcile plan --prune`, "
                "review, then `lxdgpu-reconcile apply --prune` (or a plan saved with --prune)",
            )
        return
    if not tagged and not (action.adopt and adopts(authority, fleet, action.host, action.object)):
        message = f"{where} is not tagged {state.TAG_MANAGED}; lxdgpu-reconcile does not touch it"
        if action.adopt:
            message += " (the plan adopts it, but this run was not given --adopt for it)"
        raise NotAllowed(
            message, hint="adopt it with `lxdgpu-reconcile apply --adopt NAME`, or rename it"
        )


def check_body(
    action: plans.Action,
    fleet: Fleet,
    authority: Authority,
    current: Mapping[str, Any] | None = None,
) -> None:
    """Refuse a create or an update whose body writes what ``validate`` would refuse; raises
    ``NotAllowed``. ``current`` (an update: the object as it is now) exempts what the body
    leaves as it is: writing back a key, device or profile the object already has grants
    nothing (e.g. a running container's at-start keys, kept until a restart is allowed)."""
    body = action.body
    if not isinstance(
        body,
        plans.CreateInstanceBody | plans.InstanceBody | plans.ProfileBody | plans.MoveInstanceBody,
    ):
        return
    if isinstance(body, plans.CreateInstanceBody) and body.first_password not in (
        None,
        fleet.defaults.container_user,
    ):
        raise NotAllowed(
            f"{action.object} on {action.host}: the plan sets a first password for "
            f"{body.first_password}, and the fleet file's container user is "
            f"{fleet.defaults.container_user}; nothing was written",
            hint=_REPLAN,
        )
    live_config = (current or {}).get("config") or {}
    live_devices = (current or {}).get("devices") or {}
    config: Mapping[str, str] = {k: v for k, v in body.config.items() if live_config.get(k) != v}
    devices = {
        name: _as_named(spec, authority.host_root)
        for name, spec in body.devices.items()
        if live_devices.get(name) != spec
    }
    if isinstance(body, plans.ProfileBody):
        declared = [fleet.profiles.get(name) for name in {body.name, action.object.name}]
        allow_unsafe = all(p is not None and p.allow_unsafe for p in declared)
    else:
        allow_unsafe = False
        live_profiles = (current or {}).get("profiles") or ()
        _check_profiles(action, [p for p in body.profiles if p not in live_profiles], fleet)
        config = _without_own_idmap(action, config, fleet)
    found = safety.refused(config, devices, allow_unsafe=allow_unsafe)
    if found:
        what = "; ".join(f"{'.'.join(u.path)}: {u.message}" for u in found)
        raise NotAllowed(
            f"{action.object} on {action.host}: the plan writes what validate refuses "
            f"({what}); nothing was written",
            hint=_REPLAN,
        )


def _check_profiles(action: plans.Action, profiles: list[str], fleet: Fleet) -> None:
    known = {DEFAULT_PROFILE, *fleet.profiles, *(cuda_profile_name(v) for v in fleet.cuda)}
    unknown = [name for name in profiles if name not in known]
    if unknown:
        raise NotAllowed(
            f"{action.object} on {action.host}: the plan gives it profile "
            f"{', '.join(unknown)}, which the fleet file does not know; nothing was written",
            hint=_REPLAN,
        )


def _without_own_idmap(
    action: plans.Action, config: Mapping[str, str], fleet: Fleet
) -> Mapping[str, str]:
    """``config`` without its ``raw.idmap`` when that is exactly the mapping the fleet file
    gives the container's user (what the planner writes); any other mapping is refused."""
    idmap = config.get(IDMAP)
    if idmap is None:
        return config
    owners = [
        user
        for user, spec in fleet.users.items()
        if spec.host == action.host and fleet.container_of(user) == action.object.name
    ]
    for user in owners:
        spec = fleet.users[user]
        if idmap == raw_idmap(spec.uid, spec.gid, fleet.defaults.container_uid):
            return {key: value for key, value in config.items() if key != IDMAP}
    raise NotAllowed(
        f"{action.object} on {action.host}: the plan writes a raw.idmap that is not the one the "
        "fleet file gives its user; nothing was written",
        hint=_REPLAN,
    )


def _as_named(spec: Mapping[str, str], host_root: str) -> dict[str, str]:
    """``spec`` with a disk source below the site's ``host_root`` as the fleet file names it."""
    source = spec.get("source")
    root = host_root.rstrip("/")
    if not root or source is None or not source.startswith(root + "/"):
        return dict(spec)
    return {**spec, "source": source[len(root) :]}
