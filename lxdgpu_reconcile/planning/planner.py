"""The planner: what apply will do on each host, in order, and why. Pure: no I/O.

``build_plan`` compares the desired state (``desired.expand``) with the observed snapshot object
by object and returns a frozen, JSON-serialisable ``Plan`` (``plan.model_dump(mode="json")``).
``make_plan`` does both steps for the commands (``service``). The types are in
``planning.model``; one host is planned by ``planning.host_planner``.

A plan is a list of ``Action``s per host. Each action carries everything the executor needs to
perform it without planning again:

=============  ==========  ========================================================================
kind           object      how the executor performs it
=============  ==========  ========================================================================
``create``     profile     ``POST /1.0/profiles`` with ``requests.create_profile_request``.
``create``     instance    ``POST /1.0/instances`` with ``requests.create_instance_request``
                           (image by alias; the container is created stopped; a ``start``
                           follows when it should run).
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
``build``      template    ``execute.images.build_template`` with ``BuildTemplateBody`` (or
                           the alias pointed back at an image already built from the recipe).
``copy``       template    ``execute.images.copy_image`` with ``CopyTemplateBody``.
``move``       instance    ``execute.moves.move`` with ``MoveInstanceBody``, on the target host:
                           GPU check, stop and tag the source, LXD migration, rewrite, start.
``rename``     instance    the same, with LXD's rename on the one host (``planning.move_steps``).
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
of a container protected by ``security.protection.delete``, never of a copy of a managed
container (its ``user.lxdgpu.created-as`` tag is not its own host and name), and never of LXD's
``default`` profile. A profile write that reaches untagged containers is pending unless
``touch_unmanaged`` (or ``adopt`` naming the profile) allows it.

Order per host: leftover build containers removed, template builds and copies, profile writes,
container creates, stops and updates, starts, then deletes (containers before the profiles they
use). Hosts are independent of each other but for a template copy, which depends on the build on
the template's build host; ``hold_back`` holds back what waits for a pending action (or for one
outside the plan) across hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.gcpause import gc_paused
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import move_steps as moving
from lxdgpu_reconcile.planning import rules
from lxdgpu_reconcile.planning import template_steps as templating
from lxdgpu_reconcile.planning.common import ErrorCode, PlanError
from lxdgpu_reconcile.planning.holds import hold_back
from lxdgpu_reconcile.planning.host_planner import HostPlanner
from lxdgpu_reconcile.planning.model import Hold, HostPlan, Plan, PlanOptions
from lxdgpu_reconcile.templates.recipe import LiveBuilders


@gc_paused()  # a large fleet's models are made in bulk (planning.bulk)
def make_plan(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    site: sites.Site,
    *,
    targets: Iterable[str] = (),
    prune: bool = False,
    adopt: bool | Iterable[str] = False,
    allow_restart: bool = False,
    touch_unmanaged: bool = False,
    template_files: Mapping[str, Mapping[str, bytes]] | None = None,
    only_template: str | None = None,
    force_build: bool = False,
    distribute: bool = True,
    builders: LiveBuilders | None = None,
) -> Plan:
    """Expand ``fleet`` on ``site`` and plan it against ``snapshot``.

    ``only_template`` scopes the plan to one template (what ``build TEMPLATE`` applies): its
    build, alias move or copies and its leftover build containers, nothing else; with
    ``force_build`` it is built even when its alias already carries the recipe, and without
    ``distribute`` it is not copied to other hosts.

    ``template_files`` holds, per template, the contents of the files it pushes (read from the
    fleet's folder by the caller, ``templates.sources``); without it only inline files are known.

    ``builders`` holds the facts that tell a build in progress from a leftover build container
    (this machine's hostname, its live builder processes, now; gathered by the caller, see
    ``recipe.running_builder``). None: a build container that names its builder is never deleted.
    """
    if only_template is not None:
        scope = templating.BuildScope(only_template, force=force_build, distribute=distribute)
        return _template_plan(fleet, snapshot, scope, template_files, builders)
    targets = tuple(targets)
    want = desiring.expand(fleet, snapshot, site, targets=targets)
    users = [i.user for host in want.hosts.values() for i in host.instances.values()]
    template_plan = templating.plan_templates(
        fleet,
        snapshot,
        templates=templating.in_scope(fleet, users, want.hosts),
        hosts=want.hosts,
        contents=template_files,
        builders=builders,
    )
    return build_plan(
        want,
        snapshot,
        prune=prune,
        adopt=adopt,
        allow_restart=allow_restart,
        touch_unmanaged=touch_unmanaged,
        targets=targets,
        templates=template_plan,
    )


def _template_plan(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    scope: templating.BuildScope,
    template_files: Mapping[str, Mapping[str, bytes]] | None,
    builders: LiveBuilders | None = None,
) -> Plan:
    """The plan of ``build TEMPLATE``: the template's steps on its build host and copy targets;
    no profile or container is looked at, and nothing is deleted but its leftover builds."""
    if scope.template not in fleet.templates:
        known = ", ".join(fleet.templates) or "none"
        error = PlanError(
            code=ErrorCode.UNKNOWN_TARGET,
            message=f"the fleet has no template {scope.template!r} (templates: {known})",
            fixes=("name one of the fleet's templates (the key under templates:, not its alias)",),
        )
        return Plan(errors=(error,))
    hosts = templating.build_hosts(fleet, scope)
    only = desiring.PruneScope(whole_host=False)
    want = desiring.DesiredState(
        hosts={host: desiring.DesiredHost(host=host, prune=only) for host in hosts}
    )
    template_plan = templating.plan_templates(
        fleet,
        snapshot,
        templates=(scope.template,),
        hosts=hosts,
        contents=template_files,
        build=scope,
        builders=builders,
    )
    return build_plan(want, snapshot, targets=hosts, templates=template_plan)


def build_plan(
    desired: desiring.DesiredState,
    snapshot: state.FleetSnapshot,
    *,
    prune: bool = False,
    adopt: bool | Iterable[str] = False,
    allow_restart: bool = False,
    touch_unmanaged: bool = False,
    targets: tuple[str, ...] = (),
    templates: templating.TemplatePlan | None = None,
) -> Plan:
    """The plan that turns ``snapshot`` into ``desired``.

    ``adopt`` is True (adopt every untagged object in the fleet's way) or names of containers,
    users or profiles to adopt. ``touch_unmanaged`` lets profile writes reach untagged
    containers (else they are held, as is a write of a profile named in ``adopt``'s names).
    ``targets`` is only recorded in the plan's options.
    """
    options = PlanOptions(
        targets=targets,
        prune=prune,
        adopt=adopt if isinstance(adopt, bool) else tuple(adopt),
        allow_restart=allow_restart,
        attach_gpus=desired.attach_gpus,
        touch_unmanaged=touch_unmanaged,
    )
    adopted: set[str] = set()
    templates = templates or templating.TemplatePlan()
    moves = moving.find_moves(desired, snapshot)
    hosts = tuple(
        _plan_host(
            want, snapshot.hosts.get(name), desired.preserve, options, adopted, templates, moves
        )
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
    plan = Plan(options=options, notes=tuple(notes), errors=desired.errors, hosts=hosts)
    return hold_back(plan, _moves_from_errored_hosts(plan, moves))


def _moves_from_errored_hosts(plan: Plan, moves: moving.MovePlan) -> dict[str, tuple[str, Hold]]:
    """Moves whose source host has plan errors: held, as that host's own actions are."""
    errored = {host.host for host in plan.hosts if not host.applyable}
    held = {}
    for action in plan.actions:
        source = moves.to.get(moving.key(action.host, action.object.name))
        if source is not None and source.host in errored and action.pending is None:
            held[action.id] = (
                f"not applied: {source.host}, where the container moves from, has plan errors",
                Hold.HOST_ERRORS,
            )
    return held


def _plan_host(
    want: desiring.DesiredHost,
    snap: state.HostSnapshot | None,
    preserve: rules.Preserve,
    options: PlanOptions,
    adopted: set[str],
    templates: templating.TemplatePlan,
    moves: moving.MovePlan | None = None,
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
    return HostPlanner(want, snap, preserve, options, adopted, templates, moves).run()
