"""The plan: what apply will do on each host, in order, and why. Pure: no I/O.

``build_plan`` compares the desired state (``desired.expand``) with the observed snapshot object
by object and returns a frozen, JSON-serialisable ``Plan`` (``plan.model_dump(mode="json")``).
``make_plan`` does both steps for the CLI.

A plan is a list of ``Action``s per host. Each action carries everything the executor needs to
perform it without planning again:

=============  ==========  ========================================================================
kind           object      how the executor performs it
=============  ==========  ========================================================================
``create``     profile     ``POST /1.0/profiles`` with ``body.create_request()``.
``create``     instance    ``POST /1.0/instances`` with ``body.request()`` (image by alias; the
                           container is created stopped; a ``start`` follows when it should run).
``update``     profile     ``GET`` the profile (keep its ETag), then ``PUT`` ``put_request(body,
                           current)`` with ``If-Match``.
``update``     instance    ``GET`` the instance (keep its ETag), then ``PUT`` ``put_request(body,
                           current)`` with ``If-Match``. The body is the whole local config,
                           devices and profiles to store; ``put_request`` carries over what the plan
                           leaves alone (``volatile.*``, ``image.*``, and in the lab GPU devices
                           and ``nvidia.*``) from ``current``, because a PUT replaces everything
                           and LXD refuses to lose ``volatile.idmap.*``.
``start``      instance    ``PUT /1.0/instances/NAME/state {"action": "start"}``.
``stop``       instance    ``PUT /1.0/instances/NAME/state {"action": "stop"}``.
``delete``     instance    ``DELETE /1.0/instances/NAME`` (a running one is stopped first by a
                           preceding ``stop`` action).
``delete``     profile     ``DELETE /1.0/profiles/NAME``.
``build``      template    ``execute.templates.build_template`` with ``BuildTemplateBody`` (or
                           the alias pointed back at an image already built from the recipe).
``copy``       template    ``execute.templates.copy_image`` with ``CopyTemplateBody``.
=============  ==========  ========================================================================

Rules for the executor: perform actions in plan order (or in parallel where ``depends_on``
allows); never perform an action with ``pending`` set, nor one whose ``depends_on`` failed; skip
every host whose ``applyable`` is False (all its actions are pending anyway). Before an update or
a delete, read the object again and write only if its fingerprint
(``fingerprint.instance``/``fingerprint.profile`` with the body's ``preserve``, or none for a
delete) equals ``observed`` and it is tagged ``user.lxdgpu.managed`` or the action has ``adopt``.
``reason`` only explains: no decision may depend on it.

An update that LXD applies only at start, on a running container, is three actions: ``stop``,
``update`` (``restart: true``) and ``start``, chained by ``depends_on``. Without
``allow_restart`` the three are pending and any live part of the change is a separate, applied
``update``. Deletes happen only with ``prune``, only of tagged objects no longer desired, never
of a container protected by ``security.protection.delete``, and never of LXD's ``default``
profile.

Order per host: leftover build containers removed, template builds and copies, profile writes,
container creates, stops and updates, starts, then deletes (containers before the profiles they
use). Hosts are independent of each other but for a template copy, which depends on the build on
the template's build host; ``hold_back`` holds back what waits for a pending action (or for one
outside the plan) across hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff, rules
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import templates as templating
from lxdgpu_reconcile.planning.common import (
    ErrorCode,
    Frozen,
    ObjectKind,
    ObjectRef,
    PlanError,
    PowerState,
)
from lxdgpu_reconcile.spec import models
from lxdgpu_reconcile.templates import recipe

FORMAT_VERSION: Literal[1] = 1


class ActionKind(StrEnum):
    """What an action does. Later: moving containers between hosts."""

    CREATE = "create"
    UPDATE = "update"
    BUILD = "build"
    COPY = "copy"
    START = "start"
    STOP = "stop"
    DELETE = "delete"


class Cause(StrEnum):
    """Why an object is acted on: for reports and metrics, never for decisions in apply."""

    ABSENT = "absent"  # not on the host: created
    CHANGE = "change"  # the fleet file changed (the object's spec-hash tag differs)
    DRIFT = "drift"  # changed on the host outside the tool (spec-hash tag as desired)
    POWER = "power"  # only the power state differs from the fleet file
    ADOPT = "adopt"  # an untagged object taken over
    REMOVED = "removed"  # no longer in the fleet file: deleted


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


# --- bodies: exactly what is written --------------------------------------------------------------


class CreateInstanceBody(Frozen):
    """A container to create from the image ``alias`` on the host."""

    body: Literal["create-instance"] = "create-instance"
    name: str
    alias: str
    profiles: tuple[str, ...]
    config: dict[str, str]
    devices: dict[str, dict[str, str]]

    def request(self) -> dict[str, Any]:
        """The JSON of ``POST /1.0/instances``."""
        return {
            "name": self.name,
            "type": "container",
            "source": {"type": "image", "alias": self.alias},
            "profiles": list(self.profiles),
            "config": dict(self.config),
            "devices": {name: dict(dev) for name, dev in self.devices.items()},
        }


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

    def create_request(self) -> dict[str, Any]:
        """The JSON of ``POST /1.0/profiles``."""
        return {
            "name": self.name,
            "description": self.description,
            "config": dict(self.config),
            "devices": {name: dict(dev) for name, dev in self.devices.items()},
        }


Body = Annotated[
    CreateInstanceBody
    | InstanceBody
    | ProfileBody
    | templating.BuildTemplateBody
    | templating.CopyTemplateBody,
    Field(discriminator="body"),
]

#: Fields of an instance GET that its PUT accepts back.
_INSTANCE_PUT_FIELDS = ("architecture", "description", "ephemeral", "stateful")


def put_request(body: InstanceBody | ProfileBody, current: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON of the ``PUT`` that performs an update, from the object as just read.

    ``current`` is the ``metadata`` of ``GET /1.0/instances/NAME`` or ``/1.0/profiles/NAME``.
    Config keys and devices that ``body.preserve`` covers are taken from ``current``; everything
    else comes from ``body``. For an instance, the other writable fields (architecture,
    description, ephemeral, stateful) are sent back as they are.
    """
    keep = body.preserve
    config = {k: v for k, v in (current.get("config") or {}).items() if keep.keeps_key(k)}
    devices = {n: d for n, d in (current.get("devices") or {}).items() if keep.keeps_device(d)}
    config.update(body.config)
    devices.update({name: dict(dev) for name, dev in body.devices.items()})
    if isinstance(body, ProfileBody):
        return {"description": body.description, "config": config, "devices": devices}
    request = {key: current[key] for key in _INSTANCE_PUT_FIELDS if key in current}
    request.update({"profiles": list(body.profiles), "config": config, "devices": devices})
    return request


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


# --- entry points ---------------------------------------------------------------------------------


def make_plan(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    site: sites.Site,
    *,
    targets: Iterable[str] = (),
    prune: bool = False,
    adopt: bool | Iterable[str] = False,
    allow_restart: bool = False,
    template_files: Mapping[str, Mapping[str, bytes]] | None = None,
) -> Plan:
    """Expand ``fleet`` on ``site`` and plan it against ``snapshot``.

    ``template_files`` holds, per template, the contents of the files it pushes (read from the
    fleet's folder by the caller, ``templates.files``); without it only inline files are known.
    """
    targets = tuple(targets)
    want = desiring.expand(fleet, snapshot, site, targets=targets)
    users = [i.user for host in want.hosts.values() for i in host.instances.values()]
    template_plan = templating.plan_templates(
        fleet,
        snapshot,
        templates=templating.in_scope(fleet, users, want.hosts),
        hosts=want.hosts,
        contents=template_files,
    )
    return build_plan(
        want,
        snapshot,
        prune=prune,
        adopt=adopt,
        allow_restart=allow_restart,
        targets=targets,
        templates=template_plan,
    )


def build_plan(
    desired: desiring.DesiredState,
    snapshot: state.FleetSnapshot,
    *,
    prune: bool = False,
    adopt: bool | Iterable[str] = False,
    allow_restart: bool = False,
    targets: tuple[str, ...] = (),
    templates: templating.TemplatePlan | None = None,
) -> Plan:
    """The plan that turns ``snapshot`` into ``desired``.

    ``adopt`` is True (adopt every untagged object in the fleet's way) or names of containers,
    users or profiles to adopt. ``targets`` is only recorded in the plan's options.
    """
    options = PlanOptions(
        targets=targets,
        prune=prune,
        adopt=adopt if isinstance(adopt, bool) else tuple(adopt),
        allow_restart=allow_restart,
        attach_gpus=desired.attach_gpus,
    )
    adopted: set[str] = set()
    templates = templates or templating.TemplatePlan()
    hosts = tuple(
        _plan_host(want, snapshot.hosts.get(name), desired.preserve, options, adopted, templates)
        for name, want in desired.hosts.items()
    )
    notes = list(desired.notes)
    notes.extend(note for host in hosts for note in host.notes)
    if isinstance(options.adopt, tuple):
        notes.extend(
            f"--adopt {name}: no untagged container or profile of that name is in the way"
            for name in options.adopt
            if name not in adopted
        )
    return hold_back(Plan(options=options, notes=tuple(notes), errors=desired.errors, hosts=hosts))


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
    )


def hold_back(plan: Plan, held: Mapping[str, tuple[str, Hold]] | None = None) -> Plan:
    """``plan`` with the actions in ``held`` pending for the given reasons, and every action that
    waits for a pending action, or for one the plan does not include, pending too (on any host);
    the summary is counted again.

    The planner holds back within a host as it orders it; this is what crosses hosts (a template
    copy waits for the build on another host, which may be held back or, with ``--target``, not
    planned at all) and what a policy adds afterwards (``reconcile.policy.govern``).
    """
    planned = {action.id for action in plan.actions}
    pending = {a.id: (a.pending, a.hold) for a in plan.actions if a.pending is not None}
    pending.update(held or {})
    changed = True
    while changed:
        changed = False
        for action in plan.actions:
            if action.id in pending:
                continue
            why = _waits(action, pending, planned)
            if why is not None:
                pending[action.id] = (why, Hold.DEPENDENCY)
                changed = True
    hosts = tuple(
        host.model_copy(
            update={
                "actions": tuple(
                    a.model_copy(update={"pending": pending[a.id][0], "hold": pending[a.id][1]})
                    if a.id in pending and (a.pending, a.hold) != pending[a.id]
                    else a
                    for a in host.actions
                )
            }
        )
        for host in plan.hosts
    )
    held_plan = plan.model_copy(update={"hosts": hosts})
    return held_plan.model_copy(update={"summary": summarise(held_plan)})


def _waits(action: Action, pending: Mapping[str, object], planned: set[str]) -> str | None:
    """Why ``action`` waits: a dependency that is pending, or that the plan does not include."""
    for dep in action.depends_on:
        if dep not in planned:
            host = dep.partition("/")[0]
            return (
                f"waits for {dep}, which this plan does not include ({host} is outside "
                f"--target): plan with --target {host} as well, or without --target"
            )
        if dep in pending:
            return f"waits for {dep}, which is pending"
    return None


def _is_plain_update(action: Action) -> bool:
    if action.kind is ActionKind.UPDATE:
        return not action.restart
    return action.kind in (ActionKind.START, ActionKind.STOP)


def _plan_host(
    want: desiring.DesiredHost,
    snap: state.HostSnapshot | None,
    preserve: rules.Preserve,
    options: PlanOptions,
    adopted: set[str],
    templates: templating.TemplatePlan,
) -> HostPlan:
    if snap is None:
        error = PlanError(
            code=ErrorCode.HOST_NOT_OBSERVED,
            host=want.host,
            message=f"{want.host} was not observed",
            fixes=(f"observe it: plan with --target {want.host}, or without --target",),
        )
        return HostPlan(host=want.host, applyable=False, errors=(*want.errors, error))
    if snap.error is not None:
        error = PlanError(
            code=ErrorCode.HOST_UNREACHABLE,
            host=want.host,
            message=f"{want.host} could not be read ({snap.error.kind.value}): "
            f"{snap.error.message}; nothing is planned there",
            fixes=(snap.error.hint,) if snap.error.hint else (),
        )
        return HostPlan(host=want.host, applyable=False, errors=(*want.errors, error))
    return _HostPlanner(want, snap, preserve, options, adopted, templates).run()


# --- one host -------------------------------------------------------------------------------------

#: Steps of an object's actions: the phase they run in, and their order within it.
_STEPS: dict[str, tuple[int, int]] = {
    "leftover-stop": (-2, 0),
    "leftover-delete": (-2, 1),
    "template-build": (-1, 0),
    "template-copy": (-1, 1),
    "profile-write": (0, 0),
    "create": (1, 0),
    "stop": (2, 0),
    "update": (2, 1),
    "restart-stop": (2, 2),
    "restart-update": (2, 3),
    "start": (3, 0),
    "restart-start": (3, 1),
    "delete-stop": (4, 0),
    "delete": (4, 1),
    "profile-delete": (5, 0),
}
_STATUS = {"Running": PowerState.RUNNING, "Stopped": PowerState.STOPPED}
_NEEDS_RESTART = (
    "needs a restart: run with --allow-restart (the rest of the plan applies without it)"
)
_NEEDS_PRUNE = "kept: deletes happen only with --prune"
_HOST_ERRORS = "not applied: this host has plan errors"
_PAUSED = "paused in the fleet file ({key}.paused: true)"


class _HostPlanner:
    """Collects the actions and errors of one reachable host, then orders them."""

    def __init__(
        self,
        want: desiring.DesiredHost,
        snap: state.HostSnapshot,
        preserve: rules.Preserve,
        options: PlanOptions,
        adopted: set[str],
        templates: templating.TemplatePlan,
    ) -> None:
        self.want = want
        self.snap = snap
        self.host = want.host
        self.preserve = preserve
        self.options = options
        self.adopted = adopted
        self.templates = templates
        self.actions: list[tuple[str, Action]] = []
        self.errors: list[PlanError] = [*want.errors, *templates.errors.get(self.host, ())]
        self.notes: list[str] = [*want.notes, *templates.notes.get(self.host, ())]
        self.profile_writes: dict[str, str] = {}
        self.leaving: dict[str, list[str]] = {}
        self.deleted: set[str] = set()
        self.blocked: set[str] = set()
        #: Paused containers (of paused users) -> the fleet key that pauses them.
        self.paused: dict[str, str] = {
            name: f"users.{want.user}" for name, want in want.instances.items() if want.paused
        }
        for name, obs in snap.instances.items():
            user = obs.config.get(state.TAG_USER, "")
            if obs.managed and user in want.paused_users:
                self.paused.setdefault(name, f"users.{user}")

    def run(self) -> HostPlan:
        self._check_external_profiles()
        self._template_steps()
        for name in self.want.profiles:
            self._profile(self.want.profiles[name])
        for name in sorted(self.want.instances):
            self._instance(self.want.instances[name])
        self._prune_instances()
        if self.want.prune.whole_host:
            self._prune_profiles()
        return HostPlan(
            host=self.host,
            applyable=not self.errors,
            errors=tuple(self.errors),
            notes=tuple(self.notes),
            actions=self._ordered(),
        )

    # --- bookkeeping ---

    def action_id(self, ref: ObjectRef, step: str) -> str:
        return f"{self.host}/{ref.kind.value}/{ref.name}/{step}"

    def add(
        self,
        kind: ActionKind,
        ref: ObjectRef,
        step: str,
        *,
        reason: str,
        changes: Iterable[diff.FieldChange] = (),
        restart: bool = False,
        pending: str | None = None,
        depends_on: Iterable[str] = (),
        part_of: str | None = None,
        body: Body | None = None,
        observed: str | None = None,
        adopt: bool = False,
        cause: Cause | None = None,
        hold: Hold | None = None,
    ) -> str:
        action_id = self.action_id(ref, step)
        action = Action(
            id=action_id,
            kind=kind,
            host=self.host,
            object=ref,
            changes=tuple(changes),
            restart=restart,
            reason=reason,
            pending=pending,
            depends_on=tuple(dict.fromkeys(depends_on)),
            part_of=part_of,
            body=body,
            observed=observed,
            adopt=adopt,
            cause=cause,
            hold=hold if pending is not None else None,
        )
        self.actions.append((step, action))
        return action_id

    def _error(self, code: ErrorCode, ref: ObjectRef, message: str, *fixes: str) -> None:
        self.errors.append(
            PlanError(code=code, host=self.host, object=ref, message=message, fixes=fixes)
        )
        self.blocked.add(ref.name)

    def _adopts(self, *names: str) -> bool:
        adopt = self.options.adopt
        if adopt is True:
            return True
        if adopt is False:
            return False
        found = [name for name in names if name in adopt]
        self.adopted.update(found)
        return bool(found)

    # --- templates ---

    def _template_steps(self) -> None:
        """The template builds and copies, and leftover build containers, of this host."""
        for step in self.templates.steps.get(self.host, ()):
            self.add(
                ActionKind(step.kind),
                step.object,
                step.step,
                reason=step.reason,
                changes=step.changes,
                depends_on=step.depends_on,
                part_of=step.part_of,
                body=step.body,
                observed=step.observed,
            )

    # --- profiles ---

    def _check_external_profiles(self) -> None:
        for name in self.want.external_profiles:
            if name not in self.snap.profiles:
                self._error(
                    ErrorCode.MISSING_PROFILE,
                    ObjectRef(kind=ObjectKind.PROFILE, name=name),
                    f"profile {name} is used by containers on {self.host} but is neither declared "
                    "in the fleet file nor on the host",
                    f"declare it under profiles: (lxdgpu-reconcile then creates it on {self.host})",
                    f"or create it by hand: lxc profile create {self.host}:{name}",
                )

    def _profile(self, want: desiring.DesiredProfile) -> None:
        ref = ObjectRef(kind=ObjectKind.PROFILE, name=want.name)
        wanted = diff.essence(
            config=want.config,
            devices=want.devices,
            description=want.description,
            preserve=self.preserve,
        )
        body = ProfileBody(
            name=want.name,
            description=want.description,
            config=want.config,
            devices=want.devices,
            preserve=self.preserve,
        )
        obs = self.snap.profiles.get(want.name)
        if obs is None:
            changes = diff.diff(wanted, diff.EMPTY)
            self.profile_writes[want.name] = self.add(
                ActionKind.CREATE,
                ref,
                "profile-write",
                reason=f"not on {self.host}",
                changes=changes,
                body=body,
                cause=Cause.ABSENT,
            )
            return
        reason = self._profile_reason(want, obs)
        if reason is None:
            return
        changes = diff.diff(wanted, diff.profile_essence(obs, self.preserve))
        if changes:
            self.profile_writes[want.name] = self.add(
                ActionKind.UPDATE,
                ref,
                "profile-write",
                reason=reason,
                changes=changes,
                body=body,
                observed=fingerprints.profile(obs, self.preserve),
                adopt=not obs.managed,
                cause=_cause(want.config, obs.config) if obs.managed else Cause.ADOPT,
            )

    def _profile_reason(self, want: desiring.DesiredProfile, obs: state.ProfileObs) -> str | None:
        """Why the profile is updated; None (with an error recorded) when it may not be."""
        if obs.managed:
            return _drift_or_change(want.config, obs.config)
        if want.name == desiring.DEFAULT_PROFILE:
            return (
                "LXD creates the default profile on every host; the fleet file declares it, so "
                "it is tagged and managed from now on"
            )
        if self._adopts(want.name):
            return "adopted (--adopt): tagged and managed from now on"
        self._error(
            ErrorCode.UNTAGGED_PROFILE,
            ObjectRef(kind=ObjectKind.PROFILE, name=want.name),
            f"profile {want.name} on {self.host} was not made by lxdgpu-reconcile (it has no "
            f"{state.TAG_MANAGED} tag), and the fleet file wants a profile of that name",
            f"rename it: lxc profile rename {self.host}:{want.name} {want.name}-old",
            f"or adopt it: --adopt {want.name} (tags it; lxdgpu-reconcile then manages it)",
        )
        return None

    # --- containers ---

    def _instance(self, want: desiring.DesiredInstance) -> None:
        obs = self.snap.instances.get(want.name)
        if obs is None:
            self._create(want)
            return
        adopting = self._check_instance(want, obs)
        if adopting is not None:
            self._update(want, obs, adopting)

    def _check_instance(
        self, want: desiring.DesiredInstance, obs: state.InstanceObs
    ) -> bool | None:
        """Whether ``obs`` is adopted (True) or already managed (False); None if it may not be
        touched (an error is recorded)."""
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        where = f"{self.host}:{want.name}"
        if obs.type != "container":
            self._error(
                ErrorCode.NOT_A_CONTAINER,
                ref,
                f"{want.name} on {self.host} is a {obs.type}, and the fleet wants a container of "
                "that name",
                f"rename it: lxc rename {where} {want.name}-old",
                f"or give user {want.user} another container name (users.{want.user}.container)",
            )
            return None
        adopting = False
        if not obs.managed:
            if not self._adopts(want.name, want.user):
                self._error(
                    ErrorCode.UNTAGGED_INSTANCE,
                    ref,
                    f"container {want.name} on {self.host} was not made by lxdgpu-reconcile (it "
                    f"has no {state.TAG_MANAGED} tag), and user {want.user} needs a container of "
                    "that name",
                    f"rename it: lxc rename {where} {want.name}-old",
                    f"or adopt it: --adopt {want.name} (tags it; lxdgpu-reconcile then manages it)",
                )
                return None
            adopting = True
        owner = obs.config.get(state.TAG_USER)
        if not adopting and owner != want.user:
            self._error(
                ErrorCode.OTHER_OWNER,
                ref,
                f"container {want.name} on {self.host} is tagged for user {owner}, not {want.user}",
                f"give user {want.user} another container name (users.{want.user}.container)",
                f"or remove it by hand when {owner}'s data is safe: lxc delete {where}",
            )
            return None
        if obs.status not in _STATUS:
            self._error(
                ErrorCode.UNSUPPORTED_STATUS,
                ref,
                f"container {want.name} on {self.host} is {obs.status}",
                f"bring it to Running or Stopped by hand (lxc start / lxc stop {where}), then "
                "plan again",
            )
            return None
        return adopting

    def _wanted(self, want: desiring.DesiredInstance) -> diff.Essence:
        return diff.essence(
            config=want.config,
            devices=want.devices,
            profiles=want.profiles,
            preserve=self.preserve,
        )

    def _profile_deps(self, names: Iterable[str]) -> list[str]:
        return [self.profile_writes[name] for name in names if name in self.profile_writes]

    def _create(self, want: desiring.DesiredInstance) -> None:
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        image_step = self.templates.ready.get((self.host, want.alias))
        if self.snap.image_by_alias(want.alias) is None and image_step is None:
            self._error(
                ErrorCode.MISSING_IMAGE,
                ref,
                f"image {want.alias} (template {want.template}) is not on {self.host}, and "
                f"{want.name} is created from it",
                f"build the template on its build host (`lxdgpu-reconcile build {want.template}`)"
                f" and list {self.host} in its hosts, or copy the image by hand: "
                f"lxc image copy SERVER:{want.alias} {self.host}: --alias {want.alias}",
            )
        wanted = self._wanted(want)
        body = CreateInstanceBody(
            name=want.name,
            alias=want.alias,
            profiles=want.profiles,
            config=want.config,
            devices=want.devices,
        )
        create = self.add(
            ActionKind.CREATE,
            ref,
            "create",
            reason=f"user {want.user} has no container on {self.host}",
            changes=diff.diff(wanted, diff.EMPTY),
            depends_on=[*self._profile_deps(want.profiles), *([image_step] if image_step else [])],
            body=body,
            cause=Cause.ABSENT,
        )
        if want.state is PowerState.RUNNING:
            self.add(
                ActionKind.START,
                ref,
                "start",
                reason="start it after creating it",
                changes=(_state_change(PowerState.STOPPED, PowerState.RUNNING),),
                depends_on=(create,),
                part_of=create,
                cause=Cause.ABSENT,
            )

    def _update(
        self, want: desiring.DesiredInstance, obs: state.InstanceObs, adopting: bool
    ) -> None:
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        have = diff.instance_essence(obs, self.preserve)
        changes = diff.diff(self._wanted(want), have)
        deps = self._profile_deps(want.profiles)
        reason = (
            "adopted (--adopt): tagged and managed from now on"
            if adopting
            else _drift_or_change(want.config, obs.config)
        )
        update = _Update(
            self,
            ref,
            have,
            changes,
            deps,
            reason,
            observed=fingerprints.instance(obs, self.preserve),
            adopt=adopting,
            cause=Cause.ADOPT if adopting else _cause(want.config, obs.config),
        )
        if _STATUS[obs.status] is PowerState.STOPPED:
            update.when_stopped(start=want.state is PowerState.RUNNING)
        elif want.state is PowerState.STOPPED:
            update.then_stop()
        else:
            update.while_running(allow_restart=self.options.allow_restart)
        writer = self._writer_of(ref, ("profiles",))
        if writer is not None:
            for name in obs.profiles:
                if name not in want.profiles:
                    self.leaving.setdefault(name, []).append(writer)

    def _writer_of(self, ref: ObjectRef, path: tuple[str, ...]) -> str | None:
        """The id of the action that writes field ``path`` of ``ref``, if any."""
        for _, action in self.actions:
            if action.object == ref and any(c.path == path for c in action.changes):
                return action.id
        return None

    # --- deletes ---

    def _prune_instances(self) -> None:
        for name, obs in sorted(self.snap.instances.items()):
            if name in self.want.instances or not obs.managed:
                continue
            if recipe.is_build_container(obs.config):
                continue  # a leftover build container: the template steps remove it
            user = obs.config.get(state.TAG_USER, "")
            scope = self.want.prune
            if not scope.whole_host and user not in scope.users:
                continue
            self._delete_instance(obs, user)

    def _delete_instance(self, obs: state.InstanceObs, user: str) -> None:
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=obs.name)
        pending, hold = None, None
        if not self.options.prune:
            pending, hold = _NEEDS_PRUNE, Hold.PRUNE
        elif _protected(obs):
            pending, hold = (
                "protected by security.protection.delete: release it with "
                f"`lxc config set {self.host}:{obs.name} security.protection.delete=false`, "
                "then run with --prune again",
                Hold.PROTECTED,
            )
        delete_id = self.action_id(ref, "delete")
        deps = []
        if obs.running:
            deps.append(
                self.add(
                    ActionKind.STOP,
                    ref,
                    "delete-stop",
                    reason="stop it before deleting it",
                    changes=(_state_change(PowerState.RUNNING, PowerState.STOPPED),),
                    pending=pending,
                    part_of=delete_id,
                    cause=Cause.REMOVED,
                    hold=hold,
                )
            )
        self.add(
            ActionKind.DELETE,
            ref,
            "delete",
            reason=f"not in the fleet file (tagged for user {user or '?'})",
            pending=pending,
            depends_on=deps,
            observed=fingerprints.instance(obs, None),
            cause=Cause.REMOVED,
            hold=hold,
        )
        if pending is None:
            self.deleted.add(obs.name)
        for profile in obs.profiles:
            self.leaving.setdefault(profile, []).append(delete_id)

    def _prune_profiles(self) -> None:
        for name, obs in sorted(self.snap.profiles.items()):
            if name in self.want.profiles or not obs.managed:
                continue
            if name == desiring.DEFAULT_PROFILE:
                self.notes.append(
                    f"{self.host}: the default profile is tagged but no longer declared; LXD "
                    "cannot delete it, so it stays as it is"
                )
                continue
            ref = ObjectRef(kind=ObjectKind.PROFILE, name=name)
            users = self._users_after(name)
            pending, hold = None, None
            if not self.options.prune:
                pending, hold = _NEEDS_PRUNE, Hold.PRUNE
            elif users:
                pending, hold = f"still used by {', '.join(users)}", Hold.IN_USE
            self.add(
                ActionKind.DELETE,
                ref,
                "profile-delete",
                reason="no longer needed by the fleet file",
                pending=pending,
                depends_on=self.leaving.get(name, ()),
                observed=fingerprints.profile(obs, None),
                cause=Cause.REMOVED,
                hold=hold,
            )

    def _users_after(self, profile: str) -> list[str]:
        """Containers that use ``profile`` once this plan is applied."""
        users = []
        for name, obs in sorted(self.snap.instances.items()):
            if name in self.deleted:
                continue
            want = self.want.instances.get(name)
            if want is not None and name not in self.blocked:
                if profile in want.profiles:
                    users.append(name)
            elif profile in obs.profiles:
                users.append(name)
        return users

    # --- order ---

    def _ordered(self) -> tuple[Action, ...]:
        ranked = sorted(
            self.actions,
            key=lambda item: (_STEPS[item[0]][0], item[1].object.name, _STEPS[item[0]][1]),
        )
        done: dict[str, Action] = {}
        for _, action in ranked:
            local = (dep for dep in action.depends_on if dep.startswith(f"{self.host}/"))
            missing = [dep for dep in local if dep not in done]
            if missing:
                raise AssertionError(f"{action.id} is ordered before {', '.join(missing)}")
            pending, hold = self._paused(action) or (action.pending, action.hold)
            if pending is None:
                pending, hold = self._held_back(action, done)
            if (pending, hold) != (action.pending, action.hold):
                action = action.model_copy(update={"pending": pending, "hold": hold})
            done[action.id] = action
        return tuple(done.values())

    def _paused(self, action: Action) -> tuple[str, Hold] | None:
        """Why ``action`` is left alone by a ``paused: true`` in the fleet file, if it is."""
        if self.want.paused:
            return _PAUSED.format(key=f"hosts.{self.host}"), Hold.PAUSED
        if action.object.kind is ObjectKind.INSTANCE and action.object.name in self.paused:
            return _PAUSED.format(key=self.paused[action.object.name]), Hold.PAUSED
        return None

    def _held_back(
        self, action: Action, done: Mapping[str, Action]
    ) -> tuple[str | None, Hold | None]:
        if self.errors:
            return _HOST_ERRORS, Hold.HOST_ERRORS
        for dep in action.depends_on:
            if dep in done and done[dep].pending is not None:
                return f"waits for {dep}, which is pending", Hold.DEPENDENCY
        return None, None


class _Update:
    """The actions of one existing container that differs from the fleet, in its power state.

    A container that is stopped takes every change at once (it applies at its next start). A
    running container takes live changes at once; changes LXD applies only at start need
    stop -> update -> start, which is held back (pending) without ``--allow-restart``.
    """

    def __init__(
        self,
        planner: _HostPlanner,
        ref: ObjectRef,
        have: diff.Essence,
        changes: tuple[diff.FieldChange, ...],
        deps: list[str],
        reason: str,
        *,
        observed: str,
        adopt: bool,
        cause: Cause,
    ) -> None:
        self.planner = planner
        self.ref = ref
        self.have = have
        self.changes = changes
        self.deps = deps
        self.reason = reason
        self.observed = observed
        self.adopt = adopt
        #: The cause of the writes; a lone start or stop is a difference of power state.
        self.cause = cause if changes else Cause.POWER

    def _write(
        self,
        step: str,
        changes: tuple[diff.FieldChange, ...],
        *,
        reason: str,
        depends_on: Iterable[str],
        before: tuple[diff.FieldChange, ...] = (),
        restart: bool = False,
        pending: str | None = None,
        hold: Hold | None = None,
    ) -> str:
        """An update writing ``changes`` onto the container as it is after ``before``."""
        base = diff.apply_changes(self.have, before)
        after = diff.apply_changes(base, changes)
        return self.planner.add(
            ActionKind.UPDATE,
            self.ref,
            step,
            reason=reason,
            changes=changes,
            restart=restart,
            pending=pending,
            depends_on=depends_on,
            body=InstanceBody(
                profiles=after.profiles or (),
                config=after.config,
                devices=after.devices,
                preserve=self.planner.preserve,
            ),
            observed=fingerprints.of_essence(base),
            adopt=self.adopt,
            cause=self.cause,
            hold=hold,
        )

    def when_stopped(self, *, start: bool) -> None:
        update = None
        if self.changes:
            update = self._write("update", self.changes, reason=self.reason, depends_on=self.deps)
        if start:
            self.planner.add(
                ActionKind.START,
                self.ref,
                "start",
                reason="the fleet file wants it running",
                changes=(_state_change(PowerState.STOPPED, PowerState.RUNNING),),
                depends_on=[*self.deps, *([update] if update else [])],
                part_of=update,
                cause=self.cause,
            )

    def then_stop(self) -> None:
        update_id = self.planner.action_id(self.ref, "update") if self.changes else None
        stop = self.planner.add(
            ActionKind.STOP,
            self.ref,
            "stop",
            reason="the fleet file wants it stopped",
            changes=(_state_change(PowerState.RUNNING, PowerState.STOPPED),),
            part_of=update_id,
            cause=self.cause,
        )
        if self.changes:
            self._write("update", self.changes, reason=self.reason, depends_on=[stop, *self.deps])

    def while_running(self, *, allow_restart: bool) -> None:
        if not any(change.at_start for change in self.changes):
            if self.changes:
                self._write("update", self.changes, reason=self.reason, depends_on=self.deps)
            return
        if allow_restart:
            self._restart(self.changes, (), [], pending=None)
            return
        live, held = _split(self.changes)
        earlier = []
        if live:
            earlier.append(
                self._write(
                    "update",
                    live,
                    reason=f"{self.reason}; the part LXD applies live",
                    depends_on=self.deps,
                )
            )
        self._restart(held, live, earlier, pending=_NEEDS_RESTART)

    def _restart(
        self,
        changes: tuple[diff.FieldChange, ...],
        before: tuple[diff.FieldChange, ...],
        earlier: list[str],
        *,
        pending: str | None,
    ) -> None:
        update_id = self.planner.action_id(self.ref, "restart-update")
        why = _restart_words(changes)
        hold = Hold.RESTART if pending is not None else None
        stop = self.planner.add(
            ActionKind.STOP,
            self.ref,
            "restart-stop",
            reason=f"stop it to apply {why}",
            changes=(_state_change(PowerState.RUNNING, PowerState.STOPPED),),
            restart=True,
            pending=pending,
            part_of=update_id,
            cause=self.cause,
            hold=hold,
        )
        self._write(
            "restart-update",
            changes,
            reason=f"{self.reason}; LXD applies {why} only at start, so the container is "
            "stopped, updated and started again",
            depends_on=[stop, *earlier, *self.deps],
            before=before,
            restart=True,
            pending=pending,
            hold=hold,
        )
        self.planner.add(
            ActionKind.START,
            self.ref,
            "restart-start",
            reason="start it again after the update",
            changes=(_state_change(PowerState.STOPPED, PowerState.RUNNING),),
            restart=True,
            pending=pending,
            depends_on=(update_id,),
            part_of=update_id,
            cause=self.cause,
            hold=hold,
        )


# --- helpers --------------------------------------------------------------------------------------


def _split(
    changes: tuple[diff.FieldChange, ...],
) -> tuple[tuple[diff.FieldChange, ...], tuple[diff.FieldChange, ...]]:
    """(live, held) parts of a change that needs a restart. The spec-hash tag goes with the
    held part: it records what the container was last written from, which is not yet all."""
    live = tuple(c for c in changes if not c.at_start and c.path != ("config", state.TAG_SPEC_HASH))
    held = tuple(c for c in changes if c not in live)
    return live, held


def _restart_words(changes: Iterable[diff.FieldChange]) -> str:
    names = []
    for change in changes:
        if not change.at_start:
            continue
        if change.path == ("config", rules.TAG_START_HASH):
            names.append("a profile setting")
        elif change.path[0] == "devices":
            names.append(f"device {change.path[1]}")
        else:
            names.append(change.path[-1])
    unique = list(dict.fromkeys(names))
    return ", ".join(unique) or "the change"


def _state_change(old: PowerState, new: PowerState) -> diff.FieldChange:
    return diff.FieldChange(path=("state",), old=old.value, new=new.value)


def _drift_or_change(want: Mapping[str, str], have: Mapping[str, str]) -> str:
    if _cause(want, have) is Cause.CHANGE:
        return "the fleet file changed"
    return "changed outside lxdgpu-reconcile (drift)"


def _cause(want: Mapping[str, str], have: Mapping[str, str]) -> Cause:
    """A fleet change when the spec-hash tags differ; otherwise the host drifted."""
    if want.get(state.TAG_SPEC_HASH) != have.get(state.TAG_SPEC_HASH):
        return Cause.CHANGE
    return Cause.DRIFT


def _protected(obs: state.InstanceObs) -> bool:
    config = obs.expanded_config or obs.config
    return config.get("security.protection.delete", "false").lower() == "true"
