"""The plan as data: its actions, the bodies they write, and the reasons they carry. Pure.

A plan is a list of ``Action``s per host (``HostPlan``), made by ``planning.planner`` and
performed by ``execute.executor``; how each kind of action is performed is described in
``execute.executor``, and the HTTP request bodies it sends are built in ``execute.requests``.
``plan.model_dump(mode="json")`` is the stable JSON shape of ``plan --format json`` and of saved
plans.

``reason``, ``cause`` and ``hold`` only explain: no decision in apply may depend on them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.planning import diff, rules
from lxdgpu_reconcile.planning.common import Frozen, ObjectRef, PlanError

FORMAT_VERSION: Literal[1] = 1


class ActionKind(StrEnum):
    """What an action does."""

    CREATE = "create"
    UPDATE = "update"
    BUILD = "build"
    COPY = "copy"
    ALIAS = "alias"
    START = "start"
    STOP = "stop"
    DELETE = "delete"
    #: A container moved to this host from another one (``MoveInstanceBody``).
    MOVE = "move"
    #: A container renamed on its host (``MoveInstanceBody`` with the same host).
    RENAME = "rename"


class Cause(StrEnum):
    """Why an object is acted on: for reports and metrics, never for decisions in apply."""

    ABSENT = "absent"  # not on the host: created
    CHANGE = "change"  # the fleet file changed (the object's spec-hash tag differs)
    DRIFT = "drift"  # changed on the host outside the tool (spec-hash tag as desired)
    POWER = "power"  # only the power state differs from the fleet file
    ADOPT = "adopt"  # an untagged object taken over
    REMOVED = "removed"  # no longer in the fleet file: deleted
    MOVED = "moved"  # its user's host or container name changed in the fleet file


class Hold(StrEnum):
    """Why an action is pending, as data; ``pending`` says it in words."""

    RESTART = "restart"  # needs a restart of a running container, not allowed
    PRUNE = "prune"  # a delete, not allowed (no --prune)
    PROTECTED = "protected"  # a delete of a container with security.protection.delete
    IN_USE = "in-use"  # a delete of a profile some container still uses
    PAUSED = "paused"  # the host or the user is paused in the fleet file
    HOST_ERRORS = "host-errors"  # the host has plan errors
    DEPENDENCY = "dependency"  # an action it depends on is pending
    POLICY = "policy"  # held back by reconcile's policy (see reconcile.policy)
    UNMANAGED_USERS = "unmanaged-users"  # a profile write reaching untagged containers
    GPU_BUSY = "gpu-busy"  # it would stop a container whose GPUs are in use (no --force)
    UNSEEN_HOSTS = "unseen-hosts"  # a create while a host that may hold the user is unread


# --- bodies: exactly what is written --------------------------------------------------------------


class CreateInstanceBody(Frozen):
    """A container to create from the image ``alias`` on the host.

    ``first_password`` names the container user that gets a first password, random and expired,
    once the container first runs (``vnc``: a VNC password too); the executor makes them and
    writes them only to the admin's credentials store, never to the plan."""

    body: Literal["create-instance"] = "create-instance"
    name: str
    alias: str
    profiles: tuple[str, ...]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    first_password: str | None = None
    vnc: bool = False
    #: On a cluster host: the member it is created on (``POST /1.0/instances?target=MEMBER``).
    target: str | None = None


class AccountBody(Frozen):
    """A host account for fleet user ``name``: locked, no password, a nologin shell.

    The group ``gid`` is created (named ``name``) when the host has no group with that gid; the
    home ``home`` is created with ``home_mode`` when ``create_home``."""

    body: Literal["account"] = "account"
    name: str
    uid: int
    gid: int
    home: str
    home_mode: str
    shell: str
    create_home: bool
    #: On a cluster host: the member whose own system it is on (``hosts.X.cluster.ssh``).
    member: str | None = None


class HomeBody(Frozen):
    """A host directory ``path`` owned by ``uid``:``gid`` with ``mode`` (created if missing)."""

    body: Literal["home"] = "home"
    path: str
    uid: int
    gid: int
    mode: str
    #: On a cluster host: the member whose own system it is on (``hosts.X.cluster.ssh``).
    member: str | None = None


class DelegationBody(Frozen):
    """Root delegated host id ``id`` (one id) in /etc/``file``; recorded in the tool's ledger
    on the host so that only delegations the tool added are ever removed."""

    body: Literal["delegation"] = "delegation"
    file: Literal["subuid", "subgid"]
    id: int
    #: On a cluster host: the member whose own system it is on (``hosts.X.cluster.ssh``).
    member: str | None = None


class InstanceBody(Frozen):
    """The whole local state of a container after an update (see ``put_request``)."""

    body: Literal["instance"] = "instance"
    profiles: tuple[str, ...]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    preserve: rules.Preserve


class ProfileBody(Frozen):
    """The whole state of a profile after a create or an update (see ``put_request``)."""

    body: Literal["profile"] = "profile"
    name: str
    description: str
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    preserve: rules.Preserve


class BuildTemplateBody(Frozen):
    """Build ``template`` on the host and point its alias at the new image.

    The executor first looks for an image of this template already built from ``recipe_hash``
    (e.g. ``ALIAS-previous`` after the fleet file was reverted) and points the alias back at it
    instead of building. File contents are not in the plan: the executor reads them from the
    fleet's folder and checks them against ``recipe_hash``.
    """

    body: Literal["build-template"] = "build-template"
    template: str
    spec: models.Template
    recipe_hash: str
    #: What the base contributed to ``recipe_hash`` (``recipe.base_key``).
    base_key: str
    base_source: dict[str, str]


class CopyTemplateBody(Frozen):
    """Copy the image ``alias`` names on ``source_host`` (built from ``recipe_hash``) here."""

    body: Literal["copy-template"] = "copy-template"
    template: str
    alias: str
    source_host: str
    recipe_hash: str


class AliasTemplateBody(Frozen):
    """Point ``alias`` back at ``fingerprint``, an image of ``template`` already built from
    ``recipe_hash`` (e.g. ``ALIAS-previous`` after the fleet file was reverted): no build. The
    alias's old image becomes ``ALIAS-previous``."""

    body: Literal["alias-template"] = "alias-template"
    template: str
    alias: str
    fingerprint: str
    recipe_hash: str


class MoveInstanceBody(Frozen):
    """Move user ``user``'s container ``source_name`` on ``source_host`` to ``name`` here.

    The executor (``execute.moves``) goes from wherever a previous, interrupted move left off:
    it checks the GPUs are idle, stops the source and tags it ``user.lxdgpu.moved-to``, copies
    it here (LXD's migration, stateless, instance only; on the same host: LXD's rename), writes
    ``profiles``, ``config`` and ``devices`` (what the fleet gives the container on this host),
    starts it when ``start``, checks it runs, and tags the source ``user.lxdgpu.moved-at``. The
    source is never deleted here. ``source_observed``: the source's fingerprint as planned.
    """

    body: Literal["move-instance"] = "move-instance"
    user: str
    source_host: str
    source_name: str
    source_observed: str
    name: str
    profiles: tuple[str, ...]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    preserve: rules.Preserve
    start: bool = True
    #: On a cluster host: the member the container moves to. On the same host as its source
    #: this is a move inside the cluster (LXD's move of the stopped instance with a target,
    #: ``execute.cluster_moves``); from another host, the member the copy is created on.
    member: str | None = None


Body = Annotated[
    CreateInstanceBody
    | InstanceBody
    | MoveInstanceBody
    | ProfileBody
    | BuildTemplateBody
    | CopyTemplateBody
    | AliasTemplateBody
    | AccountBody
    | HomeBody
    | DelegationBody,
    Field(discriminator="body"),
]


# --- the plan -------------------------------------------------------------------------------------


class Action(Frozen):
    """One step of a plan on one host.

    ``id`` is stable across runs: ``HOST/KIND/NAME/STEP``. ``part_of`` is set on the helper
    steps of another action (the stop and start around a restart-update, the start after a
    create, the stop before a delete) and names it; counts and headings use the other actions.

    ``observed`` is the fingerprint (``planning.fingerprint``) of the object as the plan saw it,
    on updates and deletes: the executor writes only if the object still has it. ``adopt`` is
    set on updates of an untagged object the plan takes over (``--adopt``, or LXD's ``default``
    profile when the fleet declares it): the executor writes an untagged object only then.

    ``cause`` says why the object is acted on (reports, metrics); ``hold`` is set with
    ``pending`` and says why it is held back as data. Neither decides anything in apply.
    """

    id: str
    kind: ActionKind
    host: str
    object: ObjectRef
    changes: tuple[diff.FieldChange, ...] = ()
    restart: bool = False
    reason: str = ""
    pending: str | None = None
    depends_on: tuple[str, ...] = ()
    part_of: str | None = None
    body: Body | None = None
    observed: str | None = None
    adopt: bool = False
    cause: Cause | None = None
    hold: Hold | None = None


class HostPlan(Frozen):
    """The actions on one host; not applyable when the host has errors."""

    host: str
    applyable: bool
    errors: tuple[PlanError, ...] = ()
    notes: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()


class PlanOptions(Frozen):
    targets: tuple[str, ...] = ()
    prune: bool = False
    adopt: bool | tuple[str, ...] = False
    allow_restart: bool = False
    attach_gpus: bool = True
    #: Write profiles that untagged containers use (``--touch-unmanaged``).
    touch_unmanaged: bool = False


class Summary(Frozen):
    """Counts of the actions that are not helper steps (``part_of`` unset)."""

    create: int = 0
    update: int = 0
    restart: int = 0
    delete: int = 0
    pending: int = 0
    errors: int = 0
    #: Template images to build, and to copy to other hosts.
    builds: int = 0
    copies: int = 0
    #: Containers moved to another host or renamed.
    moves: int = 0


class Plan(Frozen):
    """Everything apply will do, per host, with the errors and notes that go with it."""

    format_version: Literal[1] = FORMAT_VERSION
    options: PlanOptions = Field(default_factory=PlanOptions)
    summary: Summary = Field(default_factory=Summary)
    notes: tuple[str, ...] = ()
    errors: tuple[PlanError, ...] = ()
    hosts: tuple[HostPlan, ...] = ()

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(action for host in self.hosts for action in host.actions)

    @property
    def all_errors(self) -> tuple[PlanError, ...]:
        return self.errors + tuple(error for host in self.hosts for error in host.errors)

    @property
    def has_changes(self) -> bool:
        """True when any action is planned, pending ones included: hosts and fleet differ."""
        return bool(self.actions)

    @property
    def applyable(self) -> bool:
        return not self.all_errors


def exit_code(plan: Plan, *, detailed: bool) -> int:
    """``plan``'s exit status: 1 with errors; else 2 with changes when ``detailed``; else 0."""
    if plan.all_errors:
        return 1
    return 2 if detailed and plan.has_changes else 0


def summarise(plan: Plan) -> Summary:
    """Counts for the closing line of a rendered plan."""
    main = [action for action in plan.actions if action.part_of is None]
    done = [action for action in main if action.pending is None]
    return Summary(
        create=sum(1 for a in done if a.kind is ActionKind.CREATE),
        update=sum(1 for a in done if _is_plain_update(a)),
        restart=sum(1 for a in done if a.kind is ActionKind.UPDATE and a.restart),
        delete=sum(1 for a in done if a.kind is ActionKind.DELETE),
        pending=len(main) - len(done),
        errors=len(plan.all_errors),
        builds=sum(1 for a in done if a.kind is ActionKind.BUILD),
        copies=sum(1 for a in done if a.kind is ActionKind.COPY),
        moves=sum(1 for a in done if a.kind in (ActionKind.MOVE, ActionKind.RENAME)),
    )


def _is_plain_update(action: Action) -> bool:
    if action.kind is ActionKind.UPDATE:
        return not action.restart
    return action.kind in (ActionKind.START, ActionKind.STOP, ActionKind.ALIAS)
